"""Fit the audio-only lip-closure model of avatarkit.animation.lipsync (source 3).

Synthesises the TRAIN sentences of lipsync_data.py with eSpeak at three speaking rates, each
once nearly clean and once with white noise at 12-40 dB SNR, at random gain, labels
each 10 ms frame closed (pause, p/b/m) or open from
eSpeak's own phoneme timings, and fits a small neural network (scikit-learn MLPClassifier, one
hidden layer of 12 ReLU units) on the frame features. Writes the weights to
src/avatarkit/animation/mouth_model.json. The held-out TEST sentences are never seen here;
benchmarks/lipsync_bench.py reports on them.

Run: python benchmarks/fit_mouth_model.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from lipsync_data import TRAIN_SENTENCES, frame_labels, kappa
from sklearn.model_selection import GroupKFold
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from avatarkit import _espeak
from avatarkit.animation import lipsync as L

HIDDEN = 12
OUT = Path(__file__).parents[1] / "src" / "avatarkit" / "animation" / "mouth_model.json"


def dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs, ys, gs = [], [], []
    for gi, (voice, text) in enumerate(TRAIN_SENTENCES):
        for rate in (150, 175, 210):
            syn = _espeak.synthesize(text, voice, rate=rate)
            clean = syn.samples.astype(np.float32) / 32768.0
            rms = float(np.sqrt(np.mean(clean**2)))
            # One copy nearly clean, one with white noise at 12-40 dB SNR.
            for snr_db in (rng.uniform(50, 80), rng.uniform(12, 40)):
                noise = rng.normal(0, rms / 10 ** (snr_db / 20), len(clean))
                x = (clean + noise.astype(np.float32)) * rng.uniform(0.2, 1.0)
                feats = L._features(L._analyse(x, syn.sample_rate))
                labels = frame_labels(syn.phonemes, len(x) / syn.sample_rate)
                n = min(len(feats), len(labels))
                xs.append(feats[:n])
                ys.append(labels[:n])
                gs.append(np.full(n, gi))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def fit(x: np.ndarray, y: np.ndarray) -> tuple[StandardScaler, MLPClassifier]:
    scaler = StandardScaler().fit(x)
    net = MLPClassifier((HIDDEN,), alpha=1e-3, max_iter=3000, random_state=0)
    net.fit(scaler.transform(x), y)
    return scaler, net


def main() -> None:
    x, y, groups = dataset()
    print(f"training frames: {len(y)}, closed share {y.mean():.3f}")
    # Cross-validation by sentence, on the training set only.
    ks = []
    for tr, va in GroupKFold(n_splits=4).split(x, y, groups):
        scaler, net = fit(x[tr], y[tr])
        p = net.predict_proba(scaler.transform(x[va]))[:, 1] >= L._CLOSED_THRESHOLD
        ks.append(kappa(p, y[va]))
    print("4-fold (by sentence) kappa on training sentences:", " ".join(f"{k:.3f}" for k in ks))
    scaler, net = fit(x, y)
    model = {
        "info": {
            "what": "P(lips closed) per 10 ms frame; fitted by benchmarks/fit_mouth_model.py",
            "hidden": HIDDEN,
            "frames": len(y),
        },
        "mean": scaler.mean_.round(6).tolist(),
        "scale": scaler.scale_.round(6).tolist(),
        "w1": net.coefs_[0].round(5).tolist(),
        "b1": net.intercepts_[0].round(5).tolist(),
        "w2": net.coefs_[1].round(5).tolist(),
        "b2": net.intercepts_[1].round(5).tolist(),
    }
    OUT.write_text(json.dumps(model, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
