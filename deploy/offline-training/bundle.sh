#!/bin/bash
# What `diffusion-asr train --device cuda` needs on a GPU machine without network access that has Python 3.12
# and a CUDA build of torch: espeak-ng for the six languages, and the Python packages such an image lacks.
#
# Made here (Debian/Ubuntu x86-64, network, espeak-ng installed, a C compiler, this checkout's .venv):
#     deploy/offline-training/bundle.sh DIR          # about 45 MB
# Used there, from the checkout's root, with DIR copied over:
#     source DIR/env.sh && python3 -m app.training.commands train --device cuda ...
set -euo pipefail
out=${1:?usage: bundle.sh DIR}
venv=${VENV:-.venv}
py=${PYTHON_VERSION:-3.12}
mkdir -p "$out/esp/bin" "$out/esp/lib" "$out/pylib" "$out/whl"

# espeak-ng: its binary, its two libraries and its data, with the dictionaries of the six languages only.
# libpcaudio only plays audio and its package pulls in a whole audio stack; synthesis writes to stdout and
# never opens a device, so an empty stand-in with the same symbols takes its place. Speech from this copy is
# byte-identical to the installed package's.
data=$(espeak-ng --version | sed -n 's/.*Data at: *//p')
libdir=$(dirname "$(ldconfig -p | awk '/libespeak-ng\.so\.1 /{print $NF; exit}')")
cp "$(command -v espeak-ng)" "$out/esp/bin/"
cp -L "$libdir/libespeak-ng.so.1" "$libdir/libsonic.so.0" "$out/esp/lib/"
cc -shared -fPIC -O2 -Wl,-soname,libpcaudio.so.0 -o "$out/esp/lib/libpcaudio.so.0" -x c - <<'EOF'
#include <stddef.h>
struct audio_object;
struct audio_object *create_audio_device_object(const char *d, const char *a, const char *n) { return NULL; }
int audio_object_open(struct audio_object *o, int f, unsigned r, unsigned char c) { return -1; }
void audio_object_close(struct audio_object *o) {}
void audio_object_destroy(struct audio_object *o) {}
int audio_object_write(struct audio_object *o, const void *d, size_t b) { return -1; }
int audio_object_drain(struct audio_object *o) { return 0; }
int audio_object_flush(struct audio_object *o) { return 0; }
const char *audio_object_strerror(struct audio_object *o, int e) { return "no audio device"; }
EOF
rm -rf "$out/esp/espeak-ng-data" && cp -r "$data" "$out/esp/espeak-ng-data"
for dict in "$out"/esp/espeak-ng-data/*_dict; do
  case ${dict##*/} in en_dict | de_dict | fr_dict | es_dict | hi_dict | cmn_dict) ;; *) rm "$dict" ;; esac
done

# Python packages, at the versions this checkout's .venv runs, as wheels for the target's Python.
version() { "$venv/bin/python" -m pip show "$1" | awk '/^Version:/{print $2}'; }
"$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$out/whl" "transformers==$(version transformers)" "tokenizers==$(version tokenizers)" \
  "peft==$(version peft)" "jiwer==$(version jiwer)" "rapidfuzz==$(version rapidfuzz)"
# wordfreq's wheel is 57 MB of word lists for 40 languages. Its code, its pure-Python dependencies and the
# lists the training text reads (wordfreq's "best" list of each language) give the same sentences.
site=$("$venv/bin/python" -c "import pathlib, wordfreq; print(pathlib.Path(wordfreq.__file__).parents[1])")
for pkg in ftfy langcodes locate wcwidth; do rm -rf "$out/pylib/$pkg"; cp -r "$site/$pkg" "$out/pylib/"; done
mkdir -p "$out/pylib/wordfreq/data"
cp "$site"/wordfreq/*.py "$out/pylib/wordfreq/"
for list in large_en large_de large_fr large_es large_zh small_hi _chinese_mapping; do
  cp "$site/wordfreq/data/$list.msgpack.gz" "$out/pylib/wordfreq/data/"
done

cat > "$out/env.sh" <<'EOF'
# Sourced on the GPU machine: installs the wheels once, then puts the bundle on the paths.
bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ -d "$bundle/site" ] || python3 -m pip install -q --no-index --no-deps --no-compile --target "$bundle/site" \
  "$bundle"/whl/*.whl
export PYTHONPATH="$bundle/site:$bundle/pylib:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$bundle/esp/bin:$PATH" ESPEAK_DATA_PATH="$bundle/esp"
export LD_LIBRARY_PATH="$bundle/esp/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
EOF
du -sh "$out"
