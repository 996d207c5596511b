"""Micro-benchmark of the garbling runtime against the raw AES bound (not a test).

    .venv/bin/python benchmarks/bench_runtime.py [--wires 100000] [--repeat 3] [--threads 1]

Prints raw fixed-key AES-128-ECB throughput through OpenSSL (the physical floor), hash
throughput, and projection-layer garbling and evaluation throughput, each with its AES block
count and the ratio of that count's time at the raw AES rate to the measured time.  Also
profiles where one hash batch spends its time (packing, AES, expansion).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dashc import crt
from dashc.runtime import gates, hashing
from dashc.runtime.aes import OpenSSLAES
from dashc.runtime.hashing import HASH
from dashc.runtime.rng import insecure_seeded_random


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def raw_aes_rate(repeat: int, blocks: int = 1 << 20) -> float:
    aes = OpenSSLAES()
    data = np.random.default_rng(0).integers(0, 256, size=(blocks, 16), dtype=np.uint8)
    buf = bytearray(data.size + 16)
    return blocks / best(lambda: aes.encrypt_into(data, buf), repeat)


def measured(name, fn, repeat, aes_rate, rows):
    before = HASH.aes_blocks
    fn()  # warm up and count blocks of one run
    blocks = HASH.aes_blocks - before
    t = best(fn, repeat)
    rows.append((name, t, blocks, blocks / t, (blocks / aes_rate) / t))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wires", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (OpenSSL runs on one core)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = insecure_seeded_random(0)
    aes_rate = raw_aes_rate(args.repeat)
    print(f"torch threads: {torch.get_num_threads()}; raw AES-128-ECB (OpenSSL, "
          f"preallocated buffer): {aes_rate / 1e6:.1f} M blocks/s")

    rows = []
    W = args.wires
    for q_in, q_out in [(3, 2), (17, 19)]:
        keys = rng.residues(q_in, (W, crt.label_length(q_in)))
        elem = torch.arange(W)
        measured(f"hash {W} labels mod {q_in} -> Z_{q_out}^n",
                 lambda: HASH(keys, q_in, 1, elem, 0, q_out, crt.label_length(q_out)),
                 args.repeat, aes_rate, rows)
    for p, q in [(3, 2), (17, 19)]:
        a0 = rng.labels(p, (1, W))
        dp, dq = rng.delta(p, 1), rng.delta(q, 1)
        table = torch.from_numpy(np.arange(p) % q)
        c0, tt = gates.garble_proj(a0, p, dp, q, dq, table, 7)
        active = (a0 + 1 * dp[:, None, :]) % p
        measured(f"garble proj {W} wires Z_{p} -> Z_{q}",
                 lambda: gates.garble_proj(a0, p, dp, q, dq, table, 7), args.repeat,
                 aes_rate, rows)
        measured(f"evaluate proj {W} wires Z_{p} -> Z_{q}",
                 lambda: gates.eval_proj(active, p, q, tt, 7), args.repeat, aes_rate, rows)

    print(f"{'operation':44s} {'time s':>9s} {'AES blocks':>11s} {'M blocks/s':>11s} "
          f"{'of AES bound':>12s}")
    for name, t, blocks, rate, ratio in rows:
        print(f"{name:44s} {t:9.4f} {blocks:11d} {rate / 1e6:11.2f} {100 * ratio:11.1f}%")

    # where one hash batch spends its time
    p, q = 17, 19
    keys = rng.residues(p, (W * 2, crt.label_length(p)))
    elem = torch.arange(W * 2)
    h = hashing.output_blocks(q, crt.label_length(q))
    t_pack = best(lambda: hashing.pack(keys, p), args.repeat)
    x = hashing.pack(keys, p)
    tw = [hashing.tweak_limbs(1, elem, 0, j) for j in range(h)]
    t_aes = best(lambda: HASH._hash_openssl(x, tw), args.repeat)
    out = HASH._hash_openssl(x, tw)
    t_unpack = best(lambda: hashing.unpack(out, q, crt.label_length(q)), args.repeat)
    print(f"\nprofile of {2 * W} hashes mod {p} -> Z_{q}: pack {t_pack:.4f} s, tweak+AES+xor "
          f"{t_aes:.4f} s (raw AES alone {(1 + h) * 2 * W / aes_rate:.4f} s), expand "
          f"{t_unpack:.4f} s")


if __name__ == "__main__":
    main()
