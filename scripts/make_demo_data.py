"""Regenerate examples/demo_data: real speech from two espeak-ng voices, in the ChatML training format.

The bundled demo dataset is this script's output, so tests and the quick-start run on real speech
without downloading anything. Each voice speaks its own fixed list of short sentences; each training
sample pairs one clip (the target) with another clip of the same voice (the reference), so the data
has the shape of voice-cloning fine-tuning. Output is deterministic for a given espeak-ng and sox
(`sox -R` fixes every random seed, `-D` turns dithering off).

Usage (needs the `espeak-ng` and `sox` commands):

    python scripts/make_demo_data.py            # rewrites examples/demo_data/{train.json,audio/}
    python scripts/make_demo_data.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

SAMPLE_RATE = 24000
SYSTEM_PROMPT = "Generate audio following instruction."
ESPEAK_WORDS_PER_MINUTE = 175
# sox effects: drop silence (below 0.1% of full scale) at the start, then, reversed, at the end; pad
# 50 ms on each side; set the peak to -1 dBFS.
TRIM = ["silence", "1", "0.01", "0.1%"]
SOX_EFFECTS = [*TRIM, "reverse", *TRIM, "reverse", "pad", "0.05", "0.05", "norm", "-1"]

# speaker name -> (espeak-ng voice, sentences). Two clearly different voices: an American male and a
# British female variant. Sentences are short (1 to 3 seconds spoken) and written for this dataset.
VOICES: dict[str, tuple[str, list[str]]] = {
    "us_male": (
        "en-us",
        [
            "The kettle whistled on the stove.",
            "Please close the window.",
            "Seven boats sailed past the lighthouse.",
            "She painted the fence green.",
            "The train leaves at noon.",
            "A warm breeze crossed the field.",
            "He found his keys under the table.",
            "The library opens early today.",
            "Fresh bread smells wonderful.",
            "Our team finished on time.",
            "The river runs fast in spring.",
            "Turn left at the second light.",
            "The puppy chased a red ball.",
            "We watched the stars until midnight.",
        ],
    ),
    "gb_female": (
        "en-gb+f3",
        [
            "The garden looks lovely this morning.",
            "I would like a cup of tea.",
            "The museum has a new exhibit.",
            "Rain is expected this afternoon.",
            "She cycled to the market.",
            "The concert was cancelled.",
            "Mind the gap, please.",
            "A small bird built a nest.",
            "The letter arrived three days late.",
            "We walked along the cliffs.",
            "He keeps old records in a box.",
            "The bakery sells lovely scones.",
            "Snow covered the hills by evening.",
            "Remember to switch off the lights.",
        ],
    ),
}


def synthesize(text: str, voice: str, out_path: Path, work_dir: Path) -> None:
    """Speak `text` with espeak-ng and store it as 24 kHz mono 16-bit FLAC.

    espeak-ng's leading and trailing silence is cut to 50 ms (it only adds size to the repository) and
    the peak is set to -1 dBFS so both voices have the same level.
    """
    wav = work_dir / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(ESPEAK_WORDS_PER_MINUTE), "-w", str(wav), text], check=True
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    output = ["-r", str(SAMPLE_RATE), "-b", "16", "-c", "1", str(out_path)]
    subprocess.run(["sox", "-R", "-D", str(wav), "--comment", "", *output, *SOX_EFFECTS], check=True)


def build_samples() -> list[dict]:
    """The ChatML samples: clip i of a voice is the target, clip i+1 (wrapping) its reference."""
    samples = []
    for speaker, (voice, sentences) in VOICES.items():
        for i, text in enumerate(sentences):
            ref = (i + 1) % len(sentences)
            samples.append(
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": sentences[ref]},
                        {
                            "role": "assistant",
                            "content": {"type": "audio", "audio_url": clip_path(speaker, ref)},
                        },
                        {"role": "user", "content": text},
                        {
                            "role": "assistant",
                            "content": {"type": "audio", "audio_url": clip_path(speaker, i)},
                        },
                    ],
                    "start_index": 4,
                    "speaker": speaker,
                    "misc": {"voice": voice},
                }
            )
    return samples


def clip_path(speaker: str, index: int) -> str:
    """Path of a clip relative to the dataset directory (train.json resolves it from there)."""
    return f"audio/{speaker}/{index:02d}.flac"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent.parent / "examples" / "demo_data"
    parser.add_argument("--out", type=Path, default=default_out, help="dataset directory to (re)write")
    args = parser.parse_args()

    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install espeak-ng sox)")
    out: Path = args.out
    # Remove old clips first so a renamed speaker or a shorter sentence list leaves nothing stale.
    shutil.rmtree(out / "audio", ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        for speaker, (voice, sentences) in VOICES.items():
            for i, text in enumerate(sentences):
                synthesize(text, voice, out / clip_path(speaker, i), Path(tmp))
    samples = build_samples()
    (out / "train.json").write_text(json.dumps(samples, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(samples)} samples to {out / 'train.json'}")


if __name__ == "__main__":
    main()
