#!/bin/bash
# Re-tries each training fault of issue 18 in a scratch dir (default /tmp/erp_faults):
# a damaged checkpoint (orbax, msgpack), a workdir that is a file, bad lambdas, damaged
# dataset files, a missing data dir, a diverging run. Prints exit code, stderr line count,
# tracebacks and stderr for each; each must be one erp line.
# Usage: bash experiments/training_faults.sh [SCRATCH_DIR]
cd "$(dirname "$0")/.."
. .venv/bin/activate
SHARED=${ERP_DATA_DIR:-$PWD/../shared/data}
export ERP_DATA_DIR=$SHARED
T=${1:-/tmp/erp_faults}; case "$T" in ""|/|.|..) echo "refusing scratch dir $T"; exit 2;; esac
rm -rf "$T"; mkdir -p "$T"
train() { python -m erp.train --config configs/mnist_lenet300.py --config.train.num_steps=20 --config.train.log_every_steps=10 "$@"; }
show() { local name=$1; shift; local s=$(date +%s.%N); "$@" > $T/out 2> $T/err; local rc=$?; local e=$(date +%s.%N);
  printf '### %s\nrc=%s stderr_lines=%s traceback=%s seconds=%.1f\n' "$name" $rc $(wc -l < $T/err) $(grep -c Traceback $T/err) $(echo "$e - $s" | bc); head -c 600 $T/err; echo; }
# A good run to damage.
train --workdir=$T/good > /dev/null 2>&1; ls $T/good
cp -r $T/good $T/ck; ck=$(ls -d $T/ck/checkpoints/*/ | tail -1)
for f in $(find $ck -type f | head -50); do head -c 7 /dev/urandom > $f; done
show "orbax checkpoint with every file garbled" train --workdir=$T/ck
for kind in truncated garbage empty foreign; do
  d=$T/msg_$kind; mkdir -p $d; cp $T/good/config.json $d/
  case $kind in
    truncated) python -c "import flax.serialization as s,numpy as np; b=s.msgpack_serialize({'step':np.int32(3),'trainable':{'a':np.ones(1000,np.float32)}}); open('$d/checkpoint.msgpack','wb').write(b[:len(b)//2])";;
    garbage) head -c 5000 /dev/urandom > $d/checkpoint.msgpack;;
    empty) : > $d/checkpoint.msgpack;;
    foreign) python -c "import flax.serialization as s,numpy as np; open('$d/checkpoint.msgpack','wb').write(s.msgpack_serialize({'weights':np.ones(3)}))";;
  esac
  show "checkpoint.msgpack $kind" train --workdir=$d
done
touch $T/afile; show "workdir is a file" train --workdir=$T/afile
for l in nan inf -1; do show "lmbda=$l" train --workdir=$T/l$l --config.rd.enabled=True --config.rd.lmbda=$l; done
mkdir -p $T/data; cp -r $SHARED/* $T/data/
tr=$(find $T/data -name 'train-images*' | head -1); python - "$tr" <<'PY'
import sys; p=sys.argv[1]; b=open(p,'rb').read(); open(p,'wb').write(b[:len(b)//3])
PY
show "truncated train-images .gz" env ERP_DATA_DIR=$T/data python -m erp.train --config configs/mnist_lenet300.py --config.train.num_steps=20 --workdir=$T/trunc
cp -r $SHARED/* $T/data/ 2>/dev/null; tl=$(find $T/data -name 't10k-labels*' | head -1); python - "$tl" <<'PY'
import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[len(b)//2] ^= 0xFF; open(p,'wb').write(bytes(b))
PY
show "CRC-corrupt t10k-labels .gz" env ERP_DATA_DIR=$T/data python -m erp.train --config configs/mnist_lenet300.py --config.train.num_steps=20 --workdir=$T/crc
show "missing data dir" env ERP_DATA_DIR=/nonexistent python -m erp.train --config configs/mnist_lenet300.py --config.train.num_steps=20 --workdir=$T/nodata
show "huge learning rate (diverges)" train --workdir=$T/div --config.rd.enabled=True --config.rd.lmbda=0.1 --config.rd.latent_lr=1e30 --config.rd.decoder_lr=1e30
ls $T/div
