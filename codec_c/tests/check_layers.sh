#!/bin/sh
# check_layers.sh - the layering rule of codec_c/README.md, checked on the
# #include lines of src/ (run by `make test`):
#
#   common, pool  <-  rangecoder  <-  contexts  <-  binarize  <-  quant
#       <-  slice_enc (+ quant) / slice_dec  <-  container  <-  api (fedcodec.c)
#
# A header may include headers of lower layers only, a .c file also the
# headers of its own layer (the interface it implements); the decoder side (slice_dec.c, container.*) never includes the
# quantizer.  A new source file needs a line in layer() below.
#
#   tests/check_layers.sh [SRC_DIR]      (default: src/ next to tests/)
set -eu
cd "${1:-$(dirname "$0")/../src}"

layer() {
    case "$1" in
    fedcodec.h) echo 0 ;;
    common.h | pool.h | pool.c) echo 1 ;;
    rangecoder.h | tables.c | cost_table.h) echo 2 ;;
    contexts.h) echo 3 ;;
    binarize.h | predict_kern.h) echo 4 ;;
    quant.h | quant.c | trellis.c | slice.h | predict.h) echo 5 ;;
    slice_enc.c | slice_dec.c | short.h | short.c) echo 6 ;;
    container.h | container.c) echo 7 ;;
    fedcodec.c) echo 8 ;;
    *) echo "" ;;
    esac
}

status=0
for f in *.c *.h; do
    lf=$(layer "$f")
    if [ -z "$lf" ]; then
        echo "check_layers: $f has no layer: add it to tests/check_layers.sh"
        status=1
        continue
    fi
    for inc in $(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f"); do
        li=$(layer "$inc")
        if [ -z "$li" ]; then
            echo "check_layers: $f includes $inc, which has no layer"
            status=1
        elif [ "$li" -gt "$lf" ] || { [ "$li" -eq "$lf" ] && [ "${f%.h}" != "$f" ]; }; then
            echo "check_layers: $f (layer $lf) includes $inc (layer $li): only lower layers"
            status=1
        fi
        case "$f:$inc" in
        slice_dec.c:quant.h | container.c:quant.h | container.h:quant.h)
            echo "check_layers: $f includes $inc: the decoder never includes the quantizer"
            status=1
            ;;
        esac
    done
done
[ $status -eq 0 ] && echo "check_layers: include layering OK"
exit $status
