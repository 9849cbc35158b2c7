#!/usr/bin/env bash
# One consistent CLI, checked from the outside: exit codes (0 success, 1 failure, 2 usage),
# each command accepting only the options it uses (finetune refuses ablate's generation
# options), --weights on generate as on ablate (--dtype its alias), help texts that say
# what the command does, errors that point at the right thing (merge on a non-Llama base,
# fine-tuning a model without a chat template), chat_template.jinja read as transformers
# reads it, and crafted torch checkpoints refused with the file named.
# usage: consistency.sh PIVOTMT SHARED_DIR
set -uo pipefail
PIVOTMT=$1
SHARED=$2
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export HF_HUB_OFFLINE=1
fail() { echo "FAIL: $*"; exit 1; }
status() { "$@" >"$W/out" 2>"$W/err"; echo $?; }

# Exit codes.
[[ $(status "$PIVOTMT" --help) == 0 ]] || fail "--help"
[[ $(status "$PIVOTMT" inspect --no-such-option x) == 2 ]] || fail "an unknown option is a usage error (2): $(cat "$W/err")"
[[ $(status "$PIVOTMT" generate) == 2 ]] || fail "a missing required option is a usage error (2)"
[[ $(status "$PIVOTMT" inspect "$W/nowhere") == 1 ]] || fail "a missing model is a failure (1)"
# A negative count for an unsigned option: CLI11 2.1 wrapped it (--max-new-tokens -3 became
# 2^64 - 3 and generated until killed). A usage error naming the option, in every command.
for args in "generate -m $SHARED/fixtures/models/tiny-gqa --prompt x --max-new-tokens -3" \
            "generate -m $SHARED/fixtures/models/tiny-gqa --prompt x --seed -1" \
            "ablate --data y --model x --limit -1 --dry-run" "ablate --data y --model x --max-batch -8 --dry-run" \
            "translate --model x --text y --max-new-tokens -2"; do
  # shellcheck disable=SC2086  # the words are the arguments
  [[ $(status timeout 20 "$PIVOTMT" $args) == 2 ]] || fail "$args: not a usage error: $(cat "$W/err")"
  grep -q "expected a whole number >= 0" "$W/err" || fail "$args: $(cat "$W/err")"
done
# Sampling settings out of range: usage errors before any model is loaded (the sampler had
# refused them only at the first token, after the load).
for args in "generate -m x --prompt y --temperature -1" "generate -m x --prompt y --top-p 1.5" \
            "generate -m x --prompt y --top-k -2" "ablate --data y --model x --temperature nan --dry-run"; do
  # shellcheck disable=SC2086
  [[ $(status timeout 20 "$PIVOTMT" $args) == 2 ]] || fail "$args: not a usage error: $(cat "$W/err")"
  grep -q -- "expected " "$W/err" || fail "$args: $(cat "$W/err")"
done
# A float in an --ids file: an error naming the entry (it was a cast out of int's range).
echo '[[1, 2e300]]' >"$W/ids.json"
[[ $(status "$PIVOTMT" generate -m "$SHARED/fixtures/models/tiny-gqa" --ids "$W/ids.json" --max-new-tokens 1) == 1 ]] ||
  fail "a float id was accepted: $(cat "$W/err")"
grep -q "ids.json: entry 0: id = 2e+300 must be an integer" "$W/err" || fail "float id: $(cat "$W/err")"

# finetune takes only what it uses.
[[ $(status "$PIVOTMT" finetune --model x --data y --out z --temperature 0.7) == 2 ]] ||
  fail "finetune --temperature accepted: $(cat "$W/err")"
# (Help into files first: grep -q closing the pipe early would fail the pipeline.)
"$PIVOTMT" finetune --help >"$W/finetune-help"
for opt in --weights --adapter --greedy --max-new-tokens; do
  grep -q -- "^ *$opt\b" "$W/finetune-help" && fail "finetune --help lists $opt"
done
grep -q -- "^ *--device\b" "$W/finetune-help" || fail "finetune --help lacks --device (it trains on a GPU too)"
grep -q -- "--init-adapter" "$W/finetune-help" || fail "finetune --help lacks --init-adapter"
grep -q -- "--seed" "$W/finetune-help" || fail "finetune --help lacks --seed"

# --weights on generate (and --dtype, its alias), nf4 included.
M=$SHARED/fixtures/models/tiny-gqa
for spelling in --weights --dtype; do
  [[ $(status "$PIVOTMT" generate -m "$M" --ids "$M/prompts.json" --greedy --max-new-tokens 2 --json $spelling nf4 --device cpu) == 0 ]] ||
    fail "generate $spelling nf4: $(cat "$W/err")"
done
"$PIVOTMT" generate --help >"$W/generate-help"
grep -q "CPU or a GPU" "$W/generate-help" || fail "generate --help"
"$PIVOTMT" score --help >"$W/score-help"
grep -q "COMET" "$W/score-help" || fail "score --help"

# merge on a BERT base: refused, saying what merge needs.
mkdir -p "$W/adapter"
[[ $(status "$PIVOTMT" merge --model "$SHARED/fixtures/models/tiny-minilm" --adapter "$W/adapter" --out "$W/merged") == 1 ]] ||
  fail "merge on a BERT base"
grep -q "merge needs a Llama-family decoder" "$W/err" || fail "merge's message: $(cat "$W/err")"
[[ ! -e "$W/merged" ]] || fail "merge wrote an output"

# A model without a chat template: the model is named, not the data's first line.
T=$SHARED/fixtures/models/tiny-tower
mkdir -p "$W/no-template"
for f in "$T"/*; do [[ $(basename "$f") == golden.safetensors ]] || ln -s "$f" "$W/no-template/"; done
rm "$W/no-template/tokenizer_config.json"
python3 - "$T/tokenizer_config.json" "$W/no-template/tokenizer_config.json" "$W/template.jinja" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
open(sys.argv[3], "w").write(c.pop("chat_template"))
json.dump(c, open(sys.argv[2], "w"))
PY
echo '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}' >"$W/train.jsonl"
[[ $(status "$PIVOTMT" finetune --model "$W/no-template" --data "$W/train.jsonl" --out "$W/ft" --steps 1) == 1 ]] ||
  fail "finetune without a chat template"
grep -q "no-template: the model has no chat template" "$W/err" || fail "finetune's message: $(cat "$W/err")"
grep -q "train.jsonl:1" "$W/err" && fail "the data's line blamed: $(cat "$W/err")"

# chat_template.jinja beside the config (transformers >= 4.43 saves it there).
cp "$W/template.jinja" "$W/no-template/chat_template.jinja"
echo '[{"role": "user", "content": "Hi"}]' >"$W/messages.json"
"$PIVOTMT" prompt -m "$T" --messages "$W/messages.json" --add-generation-prompt >"$W/want" || fail "prompt"
"$PIVOTMT" prompt -m "$W/no-template" --messages "$W/messages.json" --add-generation-prompt >"$W/got" ||
  fail "prompt with chat_template.jinja: $(cat "$W/got")"
cmp -s "$W/want" "$W/got" || fail "chat_template.jinja renders differently"

echo OK
