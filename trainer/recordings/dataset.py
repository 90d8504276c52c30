"""The last steps of build-dataset.

A reference clip per target from its speaker's cleanest clips, the training set in the community scripts' layout
(`train.json` beside `clips/`), and the report.

The layout is the seed scripts' ChatML (reference transcript and clip in the user turn, then the instruction with
the text; the assistant turn holds the text and the target clip), which `train` and `prepare` read as they are
(`trainer.data.chatml`). A speaker with one kept clip has nothing else to clone from: its sample has no reference.
"""

from __future__ import annotations

import json
import os
from typing import Any

from trainer.recordings.measure import REASONS

SYSTEM = "You are a helpful assistant capable of generating speech in the voice of the provided reference audio."
INSTRUCTION = "Please generate speech for given text in reference audio's voice: "
REFERENCE_MIN_SECONDS = 2.0  # shorter clips carry too little of a voice to clone it from


def reference_pool(clips: list[dict[str, Any]], size: int, max_seconds: float) -> list[dict[str, Any]]:
    """A speaker's `size` cleanest clips of a useful reference length, cleanest first.

    All its clips if none has that length; ties broken by file name so the pick is deterministic.
    """
    fit = [c for c in clips if REFERENCE_MIN_SECONDS <= c["seconds"] <= max_seconds] or clips
    return sorted(fit, key=lambda c: (-c["clean_db"], c["file"]))[:size]


def samples(by_speaker: dict[str, list[dict[str, Any]]], pool_size: int, max_seconds: float) -> list[dict]:
    """The samples of every kept clip, speakers in name order and clips in recording order.

    The j-th target of a speaker takes the pool's clips in turn, never itself.
    """
    out = []
    for speaker in sorted(by_speaker):
        clips = by_speaker[speaker]
        pool = reference_pool(clips, pool_size, max_seconds) if len(clips) > 1 else []
        for j, clip in enumerate(clips):
            others = [c for c in pool if c["file"] != clip["file"]]
            ref = others[j % len(others)] if others else None
            out.append(_sample(speaker, clip, ref))
    return out


def _audio(clip: dict[str, Any]) -> dict[str, Any]:
    return {"type": "audio", "audio_url": f"./{clip['file']}", "raw_audio": "", "duration": round(clip["seconds"], 2),
            "offset": None}


def _sample(speaker: str, clip: dict[str, Any], ref: dict[str, Any] | None) -> dict[str, Any]:
    user: list[dict[str, Any]] = []
    if ref is not None:
        user += [{"type": "text", "text": ref["text"]}, _audio(ref)]
    user.append({"type": "text", "text": INSTRUCTION + clip["text"]})
    name = os.path.splitext(os.path.basename(clip["file"]))[0]
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
            {"role": "assistant", "content": [{"type": "text", "text": clip["text"]}, _audio(clip)]},
        ],
        "start_index": 0,
        "speaker": speaker,
        "misc": {"sample_id": name, "ref_transcript": ref["text"] if ref else None,
                 "target_transcript": clip["text"], "duration": round(clip["seconds"], 2)},
    }


def report(recordings: list[dict[str, Any]], kept: dict[str, list[dict[str, Any]]], bad: list[str],
           train: list[dict]) -> dict[str, Any]:
    """build-report.json: hours in and kept, clips, rejects by reason, per speaker, and the unusable recordings."""
    rejects = {r: {"clips": 0, "hours": 0.0} for r in REASONS}
    speakers: dict[str, dict[str, float]] = {}
    for rec in recordings:
        s = speakers.setdefault(rec["speaker"], {"recordings": 0, "hours_in": 0.0, "clips": 0, "hours_kept": 0.0})
        s["recordings"] += 1
        s["hours_in"] += rec["seconds"] / 3600
        for reason, (count, seconds) in rec["rejects"].items():
            rejects[reason]["clips"] += count
            rejects[reason]["hours"] += seconds / 3600
    for speaker, clips in kept.items():
        speakers[speaker]["clips"] = len(clips)
        speakers[speaker]["hours_kept"] = sum(c["seconds"] for c in clips) / 3600
    rounded = {k: {n: round(v, 6) if isinstance(v, float) else v for n, v in s.items()} for k, s in speakers.items()}
    return {
        "hours_in": round(sum(r["seconds"] for r in recordings) / 3600, 6),
        "hours_kept": round(sum(c["seconds"] for cs in kept.values() for c in cs) / 3600, 6),
        "recordings": len(recordings) + len(bad),
        "clips": len(train),
        "without_reference": sum(1 for s in train if s["misc"]["ref_transcript"] is None),
        "rejects": {r: {"clips": v["clips"], "hours": round(v["hours"], 6)} for r, v in rejects.items()},
        "speakers": dict(sorted(rounded.items())),
        "bad_recordings": bad,
    }


def summary(rep: dict[str, Any]) -> str:
    """The one-screen summary printed at the end."""
    lines = [f"hours in {rep['hours_in']:.3f}, kept {rep['hours_kept']:.3f}; {rep['clips']} clips "
             f"({rep['without_reference']} without a reference) from {rep['recordings']} recordings"]
    rejected = [f"{r} {v['clips']}" for r, v in rep["rejects"].items() if v["clips"]]
    lines.append("rejected: " + (", ".join(rejected) if rejected else "none"))
    for name, s in list(rep["speakers"].items())[:12]:
        lines.append(f"  {name}: {s['recordings']} recordings, {s['hours_in']:.3f} h in, {s['clips']} clips, "
                     f"{s['hours_kept']:.3f} h kept")
    if len(rep["speakers"]) > 12:
        lines.append(f"  ... and {len(rep['speakers']) - 12} more speakers (build-report.json)")
    if rep["bad_recordings"]:
        lines.append(f"{len(rep['bad_recordings'])} unusable recordings (build-report.json lists them)")
    return "\n".join(lines)


def write_json(path: str, value: Any) -> None:
    """Write JSON atomically, so an interrupted build never leaves half a file."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(path + ".tmp", path)
