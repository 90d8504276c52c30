"""Loading Higgs Audio v2 and its tokenizers, and assembling the model that trains (LoRA or freezing)."""
