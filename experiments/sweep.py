"""Runs a grid of erp.train runs from one config and overrides, each in its own workdir.

python experiments/sweep.py --config configs/mnist_lenet300.py \
    --set rd.enabled=True --sweep rd.lmbda=0.5,1,2 --root workdirs/sweep --parallel 2

--set applies to every run; each --sweep key=v1,v2,... adds a grid axis;
--module runs a baseline instead of erp.train. A run
whose workdir already holds result.json is skipped, so a sweep can be resumed.
"""
import argparse
import itertools
import os
import subprocess
import sys
import time


def grid(sweeps):
  """[(name, [override, ...])] over the cartesian product of the sweep axes."""
  axes = []
  for s in sweeps:
    key, _, values = s.partition('=')
    if not values:
      raise SystemExit(f'--sweep needs key=v1,v2,...; got {s!r}')
    axes.append([(key, v) for v in values.split(',')])
  runs = []
  for combo in itertools.product(*axes):
    name = '_'.join(f'{k.split(".")[-1]}{os.path.basename(v.rstrip("/"))}'
                    for k, v in combo) or 'run'
    runs.append((name, [f'--config.{k}={v}' for k, v in combo]))
  return runs


def last_line(root, name):
  """The last non-empty line of a run's train.log ('' if none yet)."""
  try:
    with open(os.path.join(root, name, 'train.log'), 'rb') as f:
      f.seek(max(0, os.path.getsize(f.name) - 4096))
      lines = [l for l in f.read().decode(errors='replace').splitlines() if l.strip()]
  except OSError:
    return ''
  return lines[-1][:160] if lines else ''


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--config', required=True, help='config file, optionally with :arg')
  p.add_argument('--set', action='append', default=[], help='key=value for every run')
  p.add_argument('--sweep', action='append', default=[], help='key=v1,v2,... grid axis')
  p.add_argument('--root', required=True, help='parent directory of the run workdirs')
  p.add_argument('--parallel', type=int, default=1, help='runs at a time')
  p.add_argument('--prefix', default='', help='prefix of each run directory name')
  p.add_argument('--progress_s', type=float, default=60,
                 help='print each running run\'s last log line this often (0: never)')
  p.add_argument('--module', default='erp.train',
                 help='what each run executes: erp.train, or a baseline (erp.baselines.uniform)')
  args = p.parse_args()
  common = [f'--config.{s}' for s in args.set]
  pending = [(args.prefix + name, overrides) for name, overrides in grid(args.sweep)]
  running = []
  os.makedirs(args.root, exist_ok=True)
  failed, last_report = [], time.time()
  while pending or running:
    while pending and len(running) < args.parallel:
      name, overrides = pending.pop(0)
      workdir = os.path.join(args.root, name)
      if os.path.exists(os.path.join(workdir, 'result.json')):
        print(f'skip {name}: result.json exists', flush=True)
        continue
      os.makedirs(workdir, exist_ok=True)
      cmd = [sys.executable, '-m', args.module, f'--config={args.config}',
             f'--workdir={workdir}'] + common + overrides
      log = open(os.path.join(workdir, 'train.log'), 'w')
      print(f'start {name}: {" ".join(cmd[2:])}', flush=True)
      running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT),
                      time.time()))
    time.sleep(1)
    if args.progress_s and time.time() - last_report >= args.progress_s:
      last_report = time.time()
      for name, _, start in running:
        print(f'  {name} ({time.time() - start:.0f} s): {last_line(args.root, name)}', flush=True)
    for run in list(running):
      name, proc, start = run
      if proc.poll() is not None:
        running.remove(run)
        status = 'ok' if proc.returncode == 0 else f'FAILED rc={proc.returncode}'
        if proc.returncode:
          failed.append(name)
        print(f'done {name} {status} in {time.time() - start:.0f} s', flush=True)
  if failed:
    raise SystemExit(f'failed runs: {failed}')


if __name__ == '__main__':
  main()
