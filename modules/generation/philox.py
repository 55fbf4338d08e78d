"""NVIDIA's `torch.randn` on any device: the Philox 4x32-10 counter-based generator (Salmon et
al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) and the Box-Muller transform
that CUDA's normal distribution applies to its output.

Why: most pictures shared with their infotext were made on NVIDIA GPUs, whose noise for a
seed differs from the CPU's. A1111's `randn_source: NV` remakes that noise anywhere (CPU,
MPS); this module computes the same numbers bit for bit. Written from the published
algorithm; numpy does the 32x32->64-bit multiplies exactly.
"""

from __future__ import annotations

import math

import numpy as np

# Philox 4x32 round multipliers and Weyl key increments (the published constants).
MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
KEY_BUMPS = (0x9E3779B9, 0xBB67AE85)
ROUNDS = 10
_MASK = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)

# Box-Muller scales as CUDA's curand has them: float32 constants, the product taken in
# double precision, half a step added so neither uniform is 0.
_TWO_POW32_INV = np.array([2.0**-32], dtype=np.float32)
_TWO_POW32_INV_2PI = np.array([2.0**-32 * 2 * math.pi], dtype=np.float32)


def philox4x32(counter: list[np.ndarray], key: tuple[int, int], rounds: int = ROUNDS) -> list[np.ndarray]:
    """Philox 4x32: four arrays of 32-bit counter words and a 64-bit key (two words) to four
    arrays of 32-bit random words, one block per array position."""
    words = [np.asarray(c, dtype=np.uint64) & _MASK for c in counter]
    k0, k1 = np.uint64(key[0]) & _MASK, np.uint64(key[1]) & _MASK
    m0, m1 = np.uint64(MULTIPLIERS[0]), np.uint64(MULTIPLIERS[1])
    for _ in range(rounds):
        product0, product1 = m0 * words[0], m1 * words[2]
        words = [
            (product1 >> _SHIFT) ^ words[1] ^ k0,
            product1 & _MASK,
            (product0 >> _SHIFT) ^ words[3] ^ k1,
            product0 & _MASK,
        ]
        k0 = (k0 + np.uint64(KEY_BUMPS[0])) & _MASK
        k1 = (k1 + np.uint64(KEY_BUMPS[1])) & _MASK
    return [w.astype(np.uint32) for w in words]


def box_muller(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two arrays of uniform 32-bit words to one array of standard normals (the sine half)."""
    u = x * _TWO_POW32_INV + _TWO_POW32_INV / 2
    v = y * _TWO_POW32_INV_2PI + _TWO_POW32_INV_2PI / 2
    radius = np.sqrt(-2.0 * np.log(u))
    return (radius * np.sin(v)).astype(np.float32)


class PhiloxGenerator:
    """Draws like a CUDA `torch.Generator` seeded with `seed`: element i of the n-th draw
    takes counter (n, 0, i, 0) under key (seed low word, seed high word)."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.offset = 0

    def randn(self, shape: tuple[int, ...]) -> np.ndarray:
        count = math.prod(shape)
        index = np.arange(count, dtype=np.uint64)
        zeros = np.zeros(count, dtype=np.uint64)
        key = (self.seed & 0xFFFFFFFF, (self.seed >> 32) & 0xFFFFFFFF)
        words = philox4x32([zeros + np.uint64(self.offset), zeros, index, zeros], key)
        self.offset += 1
        return box_muller(words[0], words[1]).reshape(shape)
