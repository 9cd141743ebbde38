"""Range coder throughput (symbols/s) on 10^7 symbols from a peaked table.

python benchmarks/coder_throughput.py [--num 10000000] [--out FILE.json]

The symbols are drawn from a discretized Laplace like trained EPR latents; the
table is the exporter's kind (12-bit counts plus escape). Reports encode and
decode throughput and the coded size against the ideal -log2 p.
"""
import argparse
import time

import numpy as np

from erp import coding

import record as record_lib  # benchmarks/record.py, beside this script.


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--num', type=int, default=10_000_000)
  p.add_argument('--precision', type=int, default=12)
  p.add_argument('--out', default='experiments/results/benchmarks/coder_throughput.json')
  args = p.parse_args()
  rng = np.random.default_rng(0)
  support = np.arange(-40, 41)
  pmf = np.exp(-np.abs(support) / 2.0)
  pmf /= pmf.sum()
  values = rng.choice(support, args.num, p=pmf)
  counts = coding.quantize_pmf(np.append(pmf, 1e-6), args.precision)
  t0 = time.perf_counter()
  stream, escaped = coding.encode(values, -40, counts)
  encode_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  decoded = coding.decode(stream, len(values), -40, counts, escaped)
  decode_s = time.perf_counter() - t0
  if not np.array_equal(decoded, values):
    raise SystemExit('round trip failed')
  ideal = coding.ideal_bits(values, -40, counts)
  record = {'num_symbols': args.num, 'encode_symbols_per_s': args.num / encode_s,
            'decode_symbols_per_s': args.num / decode_s, 'encode_s': encode_s,
            'decode_s': decode_s, 'coded_bits': 8 * len(stream), 'ideal_bits': ideal,
            'overhead_pct': 100 * (8 * len(stream) - ideal) / ideal}
  record_lib.write(record, args.out)


if __name__ == '__main__':
  main()
