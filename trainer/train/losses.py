"""The training objective of Higgs Audio v2, and the sums a logging window keeps of it.

The audio loss is the sum over codebooks of each codebook's mean cross-entropy over its target frames,
computed from the logits: the model's own loss divides by a count of *text* labels, which changes its scale.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from trainer.encode.collator import IGNORE, Layout


def audio_codebook_losses(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    audio_mask: torch.Tensor,
    audio_labels: torch.Tensor,
    layout: Layout,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-codebook (summed cross-entropy, target count) over the shifted audio positions.

    `logits` is (B, L, codebooks * codebook_size); audio labels (B, F, codebooks) are scattered onto the
    text positions holding audio tokens, exactly where the model places the audio embeddings.
    """
    b, seq, _ = logits.shape
    k = layout.num_codebooks
    placeholder = (input_ids == layout.audio_token_id) | (input_ids == layout.audio_delay_token_id)
    expanded = torch.full((b, seq, k), IGNORE, dtype=torch.long, device=logits.device)
    expanded[placeholder] = audio_labels[audio_mask].to(logits.device)
    shifted_logits = logits[:, :-1].reshape(b, seq - 1, k, -1)
    shifted_labels = expanded[:, 1:]
    sums, counts = [], []
    for c in range(k):
        lab = shifted_labels[:, :, c].reshape(-1)
        lg = shifted_logits[:, :, c].reshape(lab.numel(), -1).float()
        sums.append(F.cross_entropy(lg, lab, ignore_index=IGNORE, reduction="sum"))
        counts.append((lab != IGNORE).sum())
    return torch.stack(sums), torch.stack(counts)


class LossWindow:
    """Sums over the current logging window (reset at each log).

    The per-micro-batch sums (codebook losses, text loss, tokens, audio frames) stay on the loss's
    device, in one vector, until the log reads them: reading a GPU value on the host would stall the
    launch queue after every forward pass. Counts known on the host (steps, samples) stay there.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.reset()

    def reset(self) -> None:
        """Start a new window: the sums, counts and step timings of the next logging interval."""
        self.sums: torch.Tensor | None = None  # [codebook_0 .. codebook_{k-1}, text, tokens, audio_frames]
        self.steps = 0
        self.text_steps = 0
        self.samples = 0
        self.started = time.monotonic()
        # host-side timings of the window's optimizer steps (training window only)
        self.step_seconds = 0.0  # from the start of fetching a step's batches to the end of its update
        self.data_wait_seconds = 0.0  # of which: waiting for the data loader's batches

    def add(self, per_codebook: torch.Tensor, text: torch.Tensor | None, tokens: torch.Tensor,
            frames: torch.Tensor) -> None:
        """Add one micro-batch's losses and counts, on the loss's device (no host sync)."""
        zero = per_codebook.new_zeros(())
        vec = torch.cat([per_codebook.double(), torch.stack([t.double() for t in (
            text if text is not None else zero, tokens, frames)])])
        self.sums = vec if self.sums is None else self.sums + vec
        self.steps += 1
        self.text_steps += text is not None
