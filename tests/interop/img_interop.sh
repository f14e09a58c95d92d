#!/bin/bash
# ember-img against qemu-img (the oracle): images each creates must be read
# back identically by the other, pass the other's check, and report the same
# info/map/measure fields. Usage: img_interop.sh path/to/ember-img
set -u
E=$(realpath "${1:?usage: img_interop.sh EMBER_IMG}")
for t in qemu-img qemu-io python3; do
    if ! command -v $t >/dev/null; then
        echo "SKIP: $t not installed"
        exit 77
    fi
done
T=$(mktemp -d /tmp/ember-interop-XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
cd "$T"
fails=0
pass() { :; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
run() { # run a command that must succeed quietly
    if ! out=$("$@" 2>&1); then fail "$* -> $out"; return 1; fi
}
crashed() { # exit status of a signal or a sanitizer report
    [ "$1" -ge 124 ] || grep -q -e Sanitizer -e 'runtime error' err.txt
}

# A mixed source: random, repetitive (compressible), zero and partly zero clusters.
python3 - <<'PY'
import os, random
random.seed(7)
b = bytearray(5 * 1024 * 1024 + 4096)
for i in range(0, len(b), 65536):
    k = random.randint(0, 3)
    n = min(65536, len(b) - i)
    if k == 0: b[i:i + n] = os.urandom(n)
    elif k == 1: b[i:i + n] = (b'ember interop %d ' % i * 5000)[:n]
    elif k == 3: b[i + 100:i + min(n, 20000)] = os.urandom(min(n, 20000) - 100)
open('src.raw', 'wb').write(b)
PY

json_same() { # json_same FILE1 FILE2 [ignored keys...]: same fields and values
    python3 - "$@" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
ign = set(sys.argv[3:])
def strip(x):
    if isinstance(x, dict): return {k: strip(v) for k, v in x.items() if k not in ign}
    if isinstance(x, list): return [strip(v) for v in x]
    return x
if strip(a) != strip(b):
    print("ours:  ", json.dumps(strip(a), sort_keys=True))
    print("qemu's:", json.dumps(strip(b), sort_keys=True))
    sys.exit(1)
PY
}

# 1. Images ember-img creates pass qemu-img check, and info matches.
for o in "" "compat=0.10" "cluster_size=512" "cluster_size=2M" "refcount_bits=1" \
         "refcount_bits=64" "extended_l2=on" "compression_type=zstd" "lazy_refcounts=on" \
         "preallocation=metadata" "preallocation=falloc" "preallocation=full,cluster_size=4k"; do
    rm -f e.qcow2
    run $E create -q -f qcow2 ${o:+-o $o} e.qcow2 3M || continue
    qemu-img check -q e.qcow2 || fail "qemu-img check of created image ($o)"
    $E info --output=json e.qcow2 > ours.json && qemu-img info --output=json e.qcow2 > qemu.json
    json_same ours.json qemu.json actual-size || fail "info json differs ($o)"
done
qemu-img create -q -f qcow2 -o cluster_size=4k base.qcow2 3M
run $E create -q -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2
qemu-img check -q ov.qcow2 || fail "check of overlay"
$E info --output=json ov.qcow2 > ours.json && qemu-img info --output=json ov.qcow2 > qemu.json
json_same ours.json qemu.json actual-size || fail "overlay info json differs"
$E info --output=json --backing-chain ov.qcow2 > ours.json
qemu-img info --output=json --backing-chain ov.qcow2 > qemu.json
json_same ours.json qemu.json actual-size || fail "backing-chain info json differs"
run $E create -q -f raw r.raw 1M
$E info --output=json r.raw > ours.json && qemu-img info -f raw --output=json r.raw > qemu.json
json_same ours.json qemu.json actual-size || fail "raw info json differs"

# 2. ember-img convert output passes check and compares equal.
for o in "" "compat=0.10" "cluster_size=512,refcount_bits=1" "cluster_size=2M,refcount_bits=64" \
         "extended_l2=on,cluster_size=32k" "cluster_size=4k,refcount_bits=4"; do
    rm -f out.qcow2
    run $E convert -O qcow2 ${o:+-o $o} src.raw out.qcow2 || continue
    qemu-img check -q out.qcow2 || fail "check after convert ($o)"
    qemu-img compare -q -f raw -F qcow2 src.raw out.qcow2 || fail "compare after convert ($o)"
done
for ct in zlib zstd; do
    rm -f c.qcow2
    run $E convert -c -O qcow2 -o compression_type=$ct src.raw c.qcow2 || continue
    qemu-img check -q c.qcow2 || fail "check after compressed convert ($ct)"
    qemu-img compare -q -f raw -F qcow2 src.raw c.qcow2 || fail "compare compressed ($ct)"
    n=$(qemu-img check --output=json c.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin).get("compressed-clusters", 0))')
    [ "$n" -gt 0 ] || fail "no compressed clusters written ($ct)"
done
run $E convert -O raw src.raw copy.raw && cmp -s src.raw copy.raw || fail "raw to raw copy"

# 3. Images qemu-img creates read back identically.
readback() { # readback IMAGE LABEL
    rm -f back.raw
    if ! $E convert -O raw "$1" back.raw 2>err.txt; then fail "read $2: $(cat err.txt)"; return; fi
    qemu-img convert -O raw "$1" want.raw
    cmp -s want.raw back.raw || fail "content differs: $2"
    $E info --output=json "$1" > ours.json && qemu-img info --output=json "$1" > qemu.json
    json_same ours.json qemu.json actual-size || fail "info json differs: $2"
}
for o in "cluster_size=512" "cluster_size=65536" "cluster_size=2M" "compat=0.10" \
         "refcount_bits=1" "refcount_bits=64" "extended_l2=on" "extended_l2=on,cluster_size=16k" \
         "lazy_refcounts=on" "preallocation=metadata" "preallocation=falloc"; do
    qemu-img convert -O qcow2 -o $o src.raw q.qcow2 && readback q.qcow2 "$o"
done
for ct in zlib zstd; do
    for cs in 512 4096 65536 2M; do
        qemu-img convert -c -O qcow2 -o compression_type=$ct,cluster_size=$cs src.raw q.qcow2 &&
            readback q.qcow2 "compressed $ct $cs"
    done
done
# A backing chain of depth 4 with writes at every level, zero clusters and
# subcluster writes, relative backing names.
mkdir -p sub
qemu-img convert -O qcow2 src.raw sub/l0.qcow2
qemu-img create -q -f qcow2 -b l0.qcow2 -F qcow2 sub/l1.qcow2
qemu-io -c 'write -P 0x11 64k 128k' -c 'write -z 1M 256k' -c 'discard 2M 64k' sub/l1.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o extended_l2=on -b l1.qcow2 -F qcow2 sub/l2.qcow2
qemu-io -c 'write -P 0x22 4k 8k' -c 'write -P 0x23 1100k 3k' -c 'write -z 3M 2k' sub/l2.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o compat=0.10 -b sub/l2.qcow2 -F qcow2 l3.qcow2
qemu-io -c 'write -P 0x33 5M 4k' -c 'write -z 0 512' l3.qcow2 >/dev/null
readback l3.qcow2 "backing chain depth 4"
readback sub/l2.qcow2 "extended L2 overlay"
$E map --output=json l3.qcow2 > ours.json && qemu-img map --output=json l3.qcow2 > qemu.json
json_same ours.json qemu.json offset || fail "map json differs (chain)"
qemu-img convert -O qcow2 -o cluster_size=4k src.raw m.qcow2
$E map --output=json m.qcow2 > ours.json && qemu-img map --output=json m.qcow2 > qemu.json
json_same ours.json qemu.json || fail "map json differs"
$E info --output=json --backing-chain l3.qcow2 > ours.json
qemu-img info --output=json --backing-chain l3.qcow2 > qemu.json
json_same ours.json qemu.json actual-size || fail "info json differs (chain)"
# convert -B: only what differs from the backing file is written.
run $E convert -O qcow2 -B l2.qcow2 -F qcow2 l3.qcow2 sub/l3b.qcow2
qemu-img compare -q l3.qcow2 sub/l3b.qcow2 || fail "convert -B content"
qemu-img check -q sub/l3b.qcow2 || fail "convert -B check"

# 4. check: exit codes and repair.
qemu-img convert -O qcow2 src.raw leak.qcow2
$E check -q leak.qcow2; [ $? -eq 0 ] || fail "check of a clean image"
# Raise the refcount of cluster 1 (refcount table) from 1 to 2: a leak.
python3 -c "
import struct
f = open('leak.qcow2', 'r+b'); h = f.read(104)
rt = struct.unpack('>Q', h[48:56])[0]; f.seek(rt); rb = struct.unpack('>Q', f.read(8))[0]
f.seek(rb + 2); f.write(struct.pack('>H', 2))"
$E check leak.qcow2 >/dev/null 2>&1; [ $? -eq 3 ] || fail "leak not reported with exit 3"
$E check --output=json leak.qcow2 2>/dev/null > ours.json
qemu-img check --output=json leak.qcow2 > qemu.json 2>/dev/null
json_same ours.json qemu.json filename || fail "check json differs"
$E check -r leaks leak.qcow2 >/dev/null 2>&1; [ $? -eq 0 ] || fail "repair of leaks"
qemu-img check -q leak.qcow2 || fail "qemu-img check after repair"
# Lower it to 0: a corruption (exit 2), repaired by -r all.
python3 -c "
import struct
f = open('leak.qcow2', 'r+b'); h = f.read(104)
rt = struct.unpack('>Q', h[48:56])[0]; f.seek(rt); rb = struct.unpack('>Q', f.read(8))[0]
f.seek(rb + 2); f.write(struct.pack('>H', 0))"
$E check leak.qcow2 >/dev/null 2>&1; [ $? -eq 2 ] || fail "corruption not reported with exit 2"
$E check -r all leak.qcow2 >/dev/null 2>&1; [ $? -eq 0 ] || fail "repair of corruption"
qemu-img check -q leak.qcow2 || fail "qemu-img check after -r all"
$E check r.raw >/dev/null 2>&1; [ $? -eq 63 ] || fail "check of raw should exit 63"

# 5. compare and measure.
$E compare -q src.raw m.qcow2 || fail "compare identical"
qemu-img convert -O raw m.qcow2 d.raw && printf 'x' | dd of=d.raw bs=1 seek=70000 conv=notrunc 2>/dev/null
$E compare -q src.raw d.raw; [ $? -eq 1 ] || fail "compare different should exit 1"
[ "$($E compare src.raw d.raw)" = "$(qemu-img compare src.raw d.raw 2>/dev/null)" ] || fail "compare message"
for args in "-O qcow2 src.raw" "-O qcow2 m.qcow2" "-O raw m.qcow2" "-O qcow2 --size 1G" \
            "-O qcow2 -o cluster_size=4k,refcount_bits=1 --size 100M" "-O qcow2 l3.qcow2"; do
    [ "$($E measure --output=json $args 2>&1)" = "$(qemu-img measure --output=json $args 2>&1)" ] ||
        fail "measure $args"
done

# 6. resize, rebase, commit, amend.
cp m.qcow2 g.qcow2
run $E resize -q g.qcow2 +3M
qemu-img check -q g.qcow2 || fail "check after resize"
[ "$(qemu-img info --output=json g.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = $((5 * 1024 * 1024 + 4096 + 3 * 1024 * 1024)) ] ||
    fail "resize size"
qemu-img create -q -f qcow2 -b m.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -P 0x44 64k 64k' top.qcow2 >/dev/null
qemu-img convert -O raw top.qcow2 want.raw
run $E rebase -b '' top.qcow2
qemu-img check -q top.qcow2 || fail "check after rebase"
qemu-img convert -O raw top.qcow2 got.raw && cmp -s want.raw got.raw || fail "rebase content"
qemu-img create -q -f qcow2 -b m.qcow2 -F qcow2 top2.qcow2
qemu-io -c 'write -P 0x55 128k 64k' top2.qcow2 >/dev/null
qemu-img convert -O raw top2.qcow2 want.raw
run $E commit -q top2.qcow2
qemu-img check -q m.qcow2 || fail "check after commit"
qemu-img convert -O raw m.qcow2 got.raw && cmp -s want.raw got.raw || fail "commit content"
qemu-img check -q top2.qcow2 || fail "check of the emptied top after commit"
qemu-img convert -O raw top2.qcow2 got.raw && cmp -s want.raw got.raw || fail "top after commit"
[ "$(qemu-img map --output=json top2.qcow2 | grep -c '"depth": 0')" = 0 ] ||
    fail "commit left data in the top image"
run $E rebase -u -b src.raw -F raw top.qcow2
[ "$(qemu-img info --output=json top.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])')" = src.raw ] ||
    fail "rebase -u"
qemu-img check -q top.qcow2 || fail "check after rebase -u"

# resize --shrink: refused without the flag, then the tail is freed.
qemu-img convert -O qcow2 -o cluster_size=4k src.raw sh.qcow2
$E resize -q sh.qcow2 1M 2>/dev/null && fail "shrink without --shrink accepted"
run $E resize -q --shrink sh.qcow2 1M
qemu-img check -q sh.qcow2 || fail "check after shrink"
head -c 1M src.raw > head.raw
qemu-img compare -q head.raw sh.qcow2 || fail "content after shrink"
[ "$(qemu-img info --output=json sh.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = 1048576 ] ||
    fail "size after shrink"
run $E resize -q sh.qcow2 2M
head -c 1M /dev/zero >> head.raw
qemu-img compare -q head.raw sh.qcow2 || fail "shrunk tail does not read back as zeroes after growing"

# commit -b: a depth-4 chain committed into its bottom; the top stays valid.
qemu-img convert -O qcow2 src.raw c0.qcow2
qemu-img create -q -f qcow2 -b c0.qcow2 -F qcow2 c1.qcow2
qemu-io -c 'write -P 0x11 0 100k' -c 'write -z 1M 64k' c1.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b c1.qcow2 -F qcow2 c2.qcow2
qemu-io -c 'write -P 0x22 64k 100k' -c 'discard 2M 64k' c2.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b c2.qcow2 -F qcow2 c3.qcow2
qemu-io -c 'write -P 0x33 2M 10k' c3.qcow2 >/dev/null
qemu-img convert -O raw c3.qcow2 want.raw
run $E commit -q -b c0.qcow2 c3.qcow2
qemu-img check -q c0.qcow2 || fail "check of the base after commit -b"
qemu-img compare -q want.raw c0.qcow2 || fail "commit -b content in the base"
qemu-img compare -q want.raw c3.qcow2 || fail "top changed by commit -b"
$E commit -q -b nothere.qcow2 c3.qcow2 2>err.txt && fail "commit -b to a missing base accepted"
grep -q nothere.qcow2 err.txt || fail "commit -b error does not name the base"

# amend: compat both ways (zero clusters expanded for v2), lazy_refcounts.
qemu-img convert -O qcow2 src.raw am.qcow2
qemu-io -c 'write -z 64k 128k' -c 'write -z -u 1M 64k' am.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b am.qcow2 -F qcow2 amo.qcow2
qemu-io -c 'write -z 0 64k' -c 'write -P 1 200k 4k' amo.qcow2 >/dev/null
qemu-img convert -O raw am.qcow2 want.raw
qemu-img convert -O raw amo.qcow2 wanto.raw
for img in am.qcow2 amo.qcow2; do
    run $E amend -o compat=0.10 $img
    qemu-img check -q $img || fail "check after amend compat=0.10 ($img)"
    qemu-img info --output=json $img | grep -q '"compat": "0.10"' || fail "amend compat=0.10 ($img)"
done
qemu-img compare -q want.raw am.qcow2 || fail "content after amend compat=0.10"
qemu-img compare -q wanto.raw amo.qcow2 || fail "overlay content after amend compat=0.10"
run $E amend -o compat=1.1,lazy_refcounts=on am.qcow2
qemu-img check -q am.qcow2 || fail "check after amend compat=1.1"
$E info --output=json am.qcow2 > ours.json && qemu-img info --output=json am.qcow2 > qemu.json
json_same ours.json qemu.json actual-size || fail "info json after amend"
grep -q '"lazy-refcounts": true' qemu.json || fail "amend lazy_refcounts=on"
run $E amend -o lazy_refcounts=off am.qcow2
qemu-img info --output=json am.qcow2 | grep -q '"lazy-refcounts": false' || fail "amend lazy_refcounts=off"
qemu-img compare -q want.raw am.qcow2 || fail "content after amend compat=1.1"
$E amend -o compat=0.10,lazy_refcounts=on am.qcow2 2>/dev/null && fail "lazy refcounts accepted for v2"
qemu-img create -q -f qcow2 -o refcount_bits=1 am1.qcow2 1M
$E amend -o compat=0.10 am1.qcow2 2>err.txt && fail "v2 downgrade with refcount_bits=1 accepted"
grep -q am1.qcow2 err.txt || fail "amend error does not name the image"

# A dirty image (lazy refcounts, writer killed by qemu-io): check finds what
# qemu-img finds; a writable open repairs it as QEMU does.
qemu-img create -q -f qcow2 -o lazy_refcounts=on dirty.qcow2 4M
bash -c "qemu-io -c 'write -P 0x66 0 1M' -c 'sigraise 9' dirty.qcow2; true" >/dev/null 2>&1
if qemu-img info dirty.qcow2 | grep -q 'cleanly shut down: no'; then
    $E info --output=json dirty.qcow2 > ours.json && qemu-img info --output=json dirty.qcow2 > qemu.json
    json_same ours.json qemu.json actual-size || fail "info json of a dirty image"
    $E check --output=json dirty.qcow2 > ours.json 2>/dev/null
    qemu-img check --output=json dirty.qcow2 > qemu.json 2>/dev/null
    json_same ours.json qemu.json || fail "check json of a dirty image"
    run $E resize -q dirty.qcow2 +0
    qemu-img check -q dirty.qcow2 || fail "dirty image not repaired by a writable open"
    qemu-img info dirty.qcow2 | grep -q 'cleanly shut down: no' && fail "dirty bit left set"
    qemu-io -c 'read -P 0x66 0 1M' dirty.qcow2 | grep -q 'read 1048576' || fail "data lost repairing"
else
    fail "qemu-io did not leave a dirty image"
fi

# Backing loops and missing backing files: one line naming the file.
qemu-img create -q -f qcow2 -u -b loop2.qcow2 -F qcow2 loop1.qcow2 1M
qemu-img create -q -f qcow2 -u -b loop1.qcow2 -F qcow2 loop2.qcow2 1M
$E convert -O raw loop1.qcow2 l.raw 2>err.txt >/dev/null; rc=$?
{ [ $rc -eq 1 ] && grep -q loop err.txt; } || fail "backing loop: rc=$rc $(head -2 err.txt)"
qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 orphan.qcow2 1M
$E convert -O raw orphan.qcow2 l.raw 2>err.txt >/dev/null; rc=$?
{ [ $rc -eq 1 ] && grep -q gone.qcow2 err.txt; } || fail "missing backing file: rc=$rc"

# Internal snapshots made by qemu-img: ember writes copy-on-write around them.
qemu-img convert -O qcow2 -o cluster_size=4k src.raw snap.qcow2
qemu-img snapshot -c s1 snap.qcow2
python3 -c "
import os
b = bytearray(open('src.raw','rb').read())
for i in range(0, len(b), 300000): b[i:i+5000] = os.urandom(5000)
open('other.raw','wb').write(b)"
run $E convert -n -O qcow2 other.raw snap.qcow2
qemu-img check -q snap.qcow2 || fail "check after writing over a snapshot"
qemu-img compare -q other.raw snap.qcow2 || fail "content after writing over a snapshot"
$E info --output=json snap.qcow2 > ours.json && qemu-img info --output=json snap.qcow2 > qemu.json
json_same ours.json qemu.json actual-size || fail "info json with snapshots"
[ "$($E snapshot -l snap.qcow2)" = "$(qemu-img snapshot -l snap.qcow2)" ] || fail "snapshot -l"
readback snap.qcow2 "image with an internal snapshot"
run $E snapshot -a s1 snap.qcow2
qemu-img check -q snap.qcow2 || fail "check after ember applied a qemu-img snapshot"
qemu-img compare -q src.raw snap.qcow2 || fail "snapshot content damaged by writes"

# Snapshots ember-img makes, applies and deletes; qemu-img checks and applies them.
qemu-img convert -O qcow2 -o cluster_size=4k src.raw es.qcow2
run $E snapshot -c first es.qcow2
run $E convert -n -O qcow2 other.raw es.qcow2
qemu-img check -q es.qcow2 || fail "check after snapshot -c and writes"
run $E snapshot -c second es.qcow2
run $E snapshot -a first es.qcow2
qemu-img compare -q src.raw es.qcow2 || fail "content after snapshot -a"
run $E snapshot -d first es.qcow2
qemu-img check -q es.qcow2 || fail "check after snapshot -d"
qemu-img snapshot -a second es.qcow2 && qemu-img compare -q other.raw es.qcow2 ||
    fail "qemu-img applying an ember snapshot"
[ "$($E snapshot -l es.qcow2 | awk 'NR > 2 { print $2 }')" = second ] || fail "snapshot list after -d"
$E snapshot -c second es.qcow2 2>/dev/null && fail "duplicate snapshot name accepted"
$E check --output=json es.qcow2 > ours.json && qemu-img check --output=json es.qcow2 > qemu.json
json_same ours.json qemu.json || fail "check json with snapshots"

# 6b. check on damaged images finds what qemu-img finds: same exit code and
# the same corruption/leak counts (4 KiB clusters: header, refcount table,
# refcount block, L1, first L2 table at 16 KiB).
qemu-img convert -O qcow2 -o cluster_size=4k src.raw d.qcow2
check_parity() { # LABEL PYTHON-DAMAGE (f: the image opened r+b)
    cp d.qcow2 x.qcow2
    python3 -c "import struct; f=open('x.qcow2','r+b'); $2"
    $E check --output=json x.qcow2 >ours.json 2>err.txt; er=$?
    if crashed $er; then fail "check crashed on $1"; return; fi
    qemu-img check --output=json x.qcow2 >qemu.json 2>/dev/null; qr=$?
    [ $er = $qr ] || fail "check exit code on $1: ours $er, qemu-img $qr"
    [ $qr = 1 ] || json_same ours.json qemu.json || fail "check counts on $1"
}
L2=16384
check_parity "two L2 entries share a data cluster" "f.seek($L2+8); e=f.read(8); f.seek($L2+16); f.write(e)"
check_parity "data cluster on the refcount block" "f.seek($L2); f.write(struct.pack('>Q', (1<<63)|8192))"
check_parity "data cluster past EOF" "f.seek($L2); f.write(struct.pack('>Q', (1<<63)|(1<<30)))"
check_parity "unaligned data cluster" "f.seek($L2); f.write(struct.pack('>Q', (1<<63)|(20480+512)))"
check_parity "L2 table past EOF" "f.seek(12288); f.write(struct.pack('>Q', (1<<63)|(1<<30)))"
check_parity "L1 entry on the L1 table" "f.seek(12288); f.write(struct.pack('>Q', (1<<63)|12288))"
check_parity "refcount block past EOF" "f.seek(4096); f.write(struct.pack('>Q', 1<<30))"
check_parity "refcount block unaligned" "f.seek(4096); f.write(struct.pack('>Q', 8192+512))"
check_parity "refcount block zeroed" "f.seek(8192); f.write(bytes(4096))"
check_parity "file truncated" "f.truncate(1500000)"
check_parity "COPIED flag cleared" "f.seek($L2); e=struct.unpack('>Q',f.read(8))[0]; f.seek($L2); f.write(struct.pack('>Q', e & ~(1<<63)))"

# compare -s: allocation must match too, as qemu-img's strict mode.
qemu-img convert -O qcow2 src.raw s1.qcow2 && cp s1.qcow2 s2.qcow2
qemu-io -c 'write -z 64k 64k' s1.qcow2 >/dev/null && qemu-io -c 'write -P 0 64k 64k' s2.qcow2 >/dev/null
truncate -s 3M holes.raw && qemu-img create -q -f qcow2 h.qcow2 3M
for pair in "s1.qcow2 s2.qcow2" "holes.raw h.qcow2" "src.raw m.qcow2" "s2.qcow2 s2.qcow2"; do
    $E compare -q -s $pair; er=$?
    qemu-img compare -q -s $pair; qr=$?
    [ $er = $qr ] || fail "compare -s $pair: ours $er, qemu-img $qr"
done

# map of a sparse raw file, and unknown incompatible feature bits.
cp src.raw sparse.raw && truncate -s 8M sparse.raw
$E map --output=json sparse.raw > ours.json && qemu-img map -f raw --output=json sparse.raw > qemu.json
json_same ours.json qemu.json || fail "map json of a sparse raw file"
qemu-img create -q -f qcow2 feat.qcow2 1M
python3 -c "f=open('feat.qcow2','r+b'); f.seek(72); f.write((1<<40).to_bytes(8,'big'))"
$E info feat.qcow2 >/dev/null 2>err.txt && fail "unknown incompatible feature accepted"
grep -q 'feat.qcow2.*bit 40' err.txt || fail "unknown feature message: $(cat err.txt)"

# 7. Damaged images: one clear line, non-zero exit, no crash.
damage() { # damage LABEL OFFSET BYTES-AS-PYTHON-LITERAL
    cp m.qcow2 bad.qcow2
    python3 -c "f=open('bad.qcow2','r+b'); f.seek($2); f.write($3)"
    $E convert -O raw bad.qcow2 bad.raw 2>err.txt >/dev/null; rc=$?
    if crashed $rc; then fail "crash on damaged image ($1): rc=$rc $(head -3 err.txt)"; fi
    $E check bad.qcow2 >/dev/null 2>err.txt; rc=$?
    if crashed $rc; then fail "check crashed on damaged image ($1): rc=$rc"; fi
    $E info bad.qcow2 >/dev/null 2>err.txt; rc=$?
    if crashed $rc; then fail "info crashed on damaged image ($1): rc=$rc"; fi
}
damage "cluster bits" 20 "b'\\x00\\x00\\x00\\x40'"
damage "huge size" 24 "b'\\x7f'*8"
damage "l1 size" 36 "b'\\xff\\xff\\xff\\xff'"
damage "l1 offset" 40 "b'\\x00\\x00\\x00\\x00\\x00\\x00\\x10\\x01'"
damage "refcount table" 48 "b'\\xff'*8"
damage "version" 4 "b'\\x00\\x00\\x00\\x09'"
damage "incompatible bits" 72 "b'\\x80'*8"
damage "header length" 100 "b'\\xff\\xff\\xff\\xff'"
damage "backing name" 8 "b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x80\\x00\\x00\\x03\\xff'"
L1=$(python3 -c "import struct; h=open('m.qcow2','rb').read(48); print(struct.unpack('>Q', h[40:48])[0])")
damage "L1 entry garbage" $L1 "b'\\x80\\x00\\x00\\x00\\x12\\x34\\x56\\x01'"
damage "L1 entry far away" $L1 "b'\\x80\\x00\\x7f\\xff\\xff\\xff\\x00\\x00'"
damage "L2 table garbage" 262144 "bytes(range(256))*64"
damage "L2 points to compressed garbage" 262144 "b'\\x7f\\xff\\xff\\xff\\xff\\xff\\xff\\xff'*512"
head -c 100 m.qcow2 > bad.qcow2
$E info bad.qcow2 >/dev/null 2>err.txt; rc=$?
{ [ $rc -ne 0 ] && ! crashed $rc; } || fail "truncated header accepted or crashed"
$E info nonexistent.qcow2 >/dev/null 2>err.txt; [ $? -eq 1 ] || fail "missing file exit code"
grep -q nonexistent.qcow2 err.txt || fail "error message does not name the file"

if [ $fails -ne 0 ]; then
    echo "$fails failure(s)"
    exit 1
fi
echo "all interop checks passed"
