"""Cross-checks `caddie data` against the Parameter Golf reference, through the
Python SentencePiece API the reference uses (Debian's python3-sentencepiece):
byte_table.json must equal build_sentencepiece_luts() of train_gpt.py (copied
below without numpy/torch), and the shards must equal what the reference export
(download_hf_docs_and_tokenize.py: BOS, then sp.encode(text), no EOS) writes for
the same documents. Usage: reference_check.py DATA_DIR (holding corpus/ and sp*/).
Exits 1 on any difference."""
import json, struct, sys, glob
import sentencepiece as spm

def luts(sp, vocab_size):  # verbatim logic of build_sentencepiece_luts, numpy-free
    n = int(sp.vocab_size()); size = max(n, vocab_size)
    base = [0]*size; lead = [False]*size; bound = [True]*size
    for t in range(n):
        if sp.is_control(t) or sp.is_unknown(t) or sp.is_unused(t): continue
        bound[t] = False
        if sp.is_byte(t): base[t] = 1; continue
        piece = sp.id_to_piece(t)
        if piece.startswith("\u2581"): lead[t] = True; piece = piece[1:]
        base[t] = len(piece.encode("utf-8"))
    return base, lead, bound

def shard(path):
    b = open(path, 'rb').read()
    h = struct.unpack('<256i', b[:1024]); assert h[0] == 20240520 and h[1] == 1
    assert len(b) == 1024 + 2*h[2]
    return list(struct.unpack('<%dH' % h[2], b[1024:]))

root = sys.argv[1]
docs = {s: [json.loads(l)['text'] for l in open(f'{root}/corpus/{s}.jsonl')] for s in ('train','val')}
failed = False
checked = 0
for d in sorted(glob.glob(root + '/sp*')):
    sp = spm.SentencePieceProcessor(model_file=d + '/tokenizer.model')
    t = json.load(open(d + '/byte_table.json'))
    base, lead, bound = luts(sp, t['vocab_size'])
    ok_table = base == t['base_bytes'] and [int(x) for x in lead] == t['has_leading_space'] and [int(x) for x in bound] == t['is_boundary']
    ok_shards = True
    for s in ('val', 'train'):
        ref = []
        for text in docs[s]:
            ref.append(1); ref.extend(sp.encode(text, out_type=int))
        ours = []
        for p in sorted(glob.glob(f'{d}/{s}_*.bin')): ours.extend(shard(p))
        ok_shards = ok_shards and ref == ours
    print(d, 'byte table == reference LUTs:', ok_table, '| shards == reference export:', ok_shards)
    failed = failed or not (ok_table and ok_shards)
    checked += 1
if checked < 3:
    print('expected at least 3 sp* directories, found', checked); failed = True
sys.exit(1 if failed else 0)
