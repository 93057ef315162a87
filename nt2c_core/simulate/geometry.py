"""Random orientations (uniform on SO(3)), RELION Euler angles, and non-overlapping placement."""

from __future__ import annotations

import math

import numpy as np


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotation matrices (n, 3, 3) uniform on SO(3) (Shoemake's uniform unit quaternions)."""
    u1, u2, u3 = rng.random((3, n))
    q = np.stack(
        [
            np.sqrt(1 - u1) * np.sin(2 * np.pi * u2),
            np.sqrt(1 - u1) * np.cos(2 * np.pi * u2),
            np.sqrt(u1) * np.sin(2 * np.pi * u3),
            np.sqrt(u1) * np.cos(2 * np.pi * u3),
        ],
        axis=1,
    )
    return quaternion_to_matrix(q)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices from unit quaternions (x, y, z, w), shape (n, 4) -> (n, 3, 3)."""
    x, y, z, w = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def euler_to_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's ZYZ Euler matrix A(rot, tilt, psi) in degrees (a map point r projects to A r)."""
    a, b, g = (math.radians(v) for v in (rot, tilt, psi))
    ca, sa, cb, sb, cg, sg = math.cos(a), math.sin(a), math.cos(b), math.sin(b), math.cos(g), math.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array(
        [
            [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
            [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
            [sc, ss, cb],
        ]
    )


def matrix_to_euler(matrix: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`euler_to_matrix`: (rot, tilt, psi) in degrees (RELION convention)."""
    a = np.asarray(matrix, dtype=np.float64)
    sb = math.hypot(a[0, 2], a[1, 2])
    if sb > 16 * np.finfo(float).eps:
        psi = math.atan2(a[1, 2], -a[0, 2])
        rot = math.atan2(a[2, 1], a[2, 0])
        tilt = math.atan2(sb, a[2, 2])
    else:
        rot = 0.0
        tilt = 0.0 if a[2, 2] > 0 else math.pi
        psi = math.atan2(-a[1, 0], a[0, 0]) if a[2, 2] > 0 else math.atan2(a[1, 0], -a[0, 0])
    return math.degrees(rot), math.degrees(tilt), math.degrees(psi)


def place_particles(
    n: int, width: int, height: int, min_distance: float, margin: float, rng: np.random.Generator, max_tries: int = 50
) -> np.ndarray:
    """Up to ``n`` random (x, y) centres in px, at least ``min_distance`` apart and ``margin`` px
    from the edges (random sequential addition, ``max_tries`` x n candidates at most)."""
    low = np.array([margin, margin])
    high = np.array([width - margin, height - margin])
    if np.any(high <= low) or n <= 0:
        return np.zeros((0, 2))
    placed: list[np.ndarray] = []
    cell = max(min_distance, 1.0)
    grid: dict[tuple[int, int], list[int]] = {}
    for _ in range(max_tries * n):
        p = low + rng.random(2) * (high - low)
        key = (int(p[0] // cell), int(p[1] // cell))
        near = (grid.get((key[0] + i, key[1] + j), []) for i in (-1, 0, 1) for j in (-1, 0, 1))
        if all(np.hypot(*(placed[k] - p)) >= min_distance for ks in near for k in ks):
            grid.setdefault(key, []).append(len(placed))
            placed.append(p)
            if len(placed) == n:
                break
    return np.asarray(placed).reshape(-1, 2)
