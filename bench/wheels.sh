#!/usr/bin/env bash
# Wheels for bench/gpu_check.sh on a CUDA machine that reaches no package index (cp312, manylinux x86_64).
#
#   bash bench/wheels.sh            # -> bench/wheels/ (git-ignored; the device runner carries it: carry=["bench/wheels"])
#
# The image such a machine runs typically has torch, transformers, peft, accelerate, safetensors, numpy, pandas,
# pyarrow, rich and matplotlib, but not what the TRL baseline, QLoRA and the project itself import beyond those.
# Each wheel is taken without its dependencies (they are listed here, one by one), so the folder holds only what
# the image lacks. bitsandbytes' wheel (43 MB) is repacked with its CUDA 13 and CPU libraries only: its CUDA
# 11/12, ROCm and XPU builds are 90 % of it and that machine's torch is built for CUDA 13. The folder must stay
# under the runner's 64 MiB carry limit; the script checks it.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-bench/wheels}
PY=${PYTHON:-$( [ -x /work/main/.venv/bin/python ] && echo /work/main/.venv/bin/python || echo python3 )}
KEEP_CUDA=${WHEELS_CUDA:-13}   # which libbitsandbytes_cudaNNN builds stay: those whose version starts with this
PACKAGES=(trl datasets ollama pydantic pydantic-core annotated-types typing-inspection jsonlines dill
          multiprocess gguf xxhash sniffio bitsandbytes)
mkdir -p "$DEST"
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$DEST" "${PACKAGES[@]}"
"$PY" - "$DEST" "$KEEP_CUDA" <<'PYEOF'
"""Repack bitsandbytes without the GPU libraries this machine cannot use (RECORD rewritten to match)."""
import re, sys, zipfile
from pathlib import Path

dest, keep = Path(sys.argv[1]), sys.argv[2]
for whl in dest.glob("bitsandbytes-*.whl"):
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        def dropped(name: str) -> bool:
            m = re.search(r"libbitsandbytes_(cuda(\d+)|rocm\d+|xpu\d+)\.so$", name)
            return bool(m) and not (m.group(2) and m.group(2).startswith(keep))
        gone = [n for n in names if dropped(n)]
        if not gone:
            continue
        tmp = whl.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            for n in names:
                if n in gone:
                    continue
                data = z.read(n)
                if n.endswith(".dist-info/RECORD"):
                    data = b"".join(l for l in data.splitlines(keepends=True) if l.split(b",")[0].decode() not in gone)
                out.writestr(z.getinfo(n), data)
    tmp.replace(whl)
    print(f"{whl.name}: dropped {len(gone)} libraries (" + ", ".join(sorted(Path(g).name for g in gone)) + ")")
PYEOF
total=$(du -sb "$DEST" | cut -f1)
echo "$DEST: $(ls "$DEST" | wc -l) wheels, $(( total / 1048576 )) MiB"
if [ "$total" -gt $(( 60 * 1048576 )) ]; then
    echo "too large for the device runner's 64 MiB carry (with room for the rest): drop a package" >&2; exit 1
fi
