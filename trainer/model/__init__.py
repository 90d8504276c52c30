"""Loading Higgs Audio v2 and its tokenizers, and assembling the model that trains (token routing, LoRA or freezing)."""
