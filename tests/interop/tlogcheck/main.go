// Command tlogcheck checks signetd's transparency-log proofs with an implementation
// that is not signetd's: Go's golang.org/x/mod/sumdb/note (C2SP signed notes, Ed25519
// verifier keys) and golang.org/x/mod/sumdb/tlog (RFC 6962 Merkle trees). The audit
// log's tests (tests/daemon/transparency.rs) hand it what signetd's CLI prints.
//
// Usage:
//
//	tlogcheck [-key VERIFIER_KEY] inclusion   < bundle.json
//	tlogcheck [-key VERIFIER_KEY] consistency < bundle.json
//
// "inclusion" reads what 'signetd audit find --json' prints:
//
//	{"record": "<line>", "index": N, "tree_size": T, "proof": ["<base64>", ...],
//	 "checkpoint": "<signed note>", "verifier_key": "name+hexkeyid+base64key"}
//
// and checks that the checkpoint is a C2SP signed note with a valid signature by
// verifier_key (note.Open), that its text is a C2SP tlog-checkpoint (an origin line, the
// tree size in decimal, the base64 root hash, then optional non-empty extension lines;
// anything else is refused), that tree_size is the checkpoint's size, and that proof
// proves leaf index of that tree is the record: tlog.CheckRecord with the leaf hash
// tlog.RecordHash(record), SHA-256(0x00 || record), the record being the exact line
// bytes without the newline.
//
// "consistency" reads what 'signetd audit prove --from OLD' prints:
//
//	{"old_checkpoint": "<signed note>", "new_checkpoint": "<signed note>",
//	 "proof": ["<base64>", ...], "verifier_key": "name+hexkeyid+base64key"}
//
// and checks that both checkpoints are signed by verifier_key, have the same origin,
// and that proof proves the old tree is a prefix of the new one (tlog.CheckTree). An
// old checkpoint of size 0 is refused: the log always holds its genesis record.
//
// The bundle names its own verifier key; -key VERIFIER_KEY (the key published
// elsewhere, e.g. by 'signetd audit verifier-key') also requires it to be that key.
//
// On success it prints one line starting with "ok: " (origin and sizes) and exits 0;
// otherwise it prints the reason on stderr and exits 1 (2 for bad usage). Unknown
// fields in a bundle and trailing data are refused, so a change of format is noticed.
//
// It needs only the standard library and golang.org/x/mod, and builds offline in GOPATH
// mode with Debian's golang-go and golang-golang-x-mod-dev (scripts/test.sh installs
// them, builds it into the target directory and exports its path as
// SIGNETD_TEST_TLOGCHECK):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o tlogcheck ./tests/interop/tlogcheck
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// inclusionBundle is what 'signetd audit find --json' prints. Pointers tell a missing
// field from a zero one.
type inclusionBundle struct {
	Record      *string   `json:"record"`
	Index       *int64    `json:"index"`
	TreeSize    *int64    `json:"tree_size"`
	Proof       *[]string `json:"proof"`
	Checkpoint  *string   `json:"checkpoint"`
	VerifierKey *string   `json:"verifier_key"`
}

// consistencyBundle is what 'signetd audit prove --from OLD' prints.
type consistencyBundle struct {
	OldCheckpoint *string   `json:"old_checkpoint"`
	NewCheckpoint *string   `json:"new_checkpoint"`
	Proof         *[]string `json:"proof"`
	VerifierKey   *string   `json:"verifier_key"`
}

// checkpoint is the parsed body of a C2SP tlog-checkpoint note.
type checkpoint struct {
	origin     string
	size       int64
	root       tlog.Hash
	extensions []string
}

func main() {
	key := flag.String("key", "", "require the bundle's verifier_key to be exactly this `VERIFIER_KEY`")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: tlogcheck [-key VERIFIER_KEY] inclusion|consistency < bundle.json\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	var (
		ok  string
		err error
	)
	switch flag.Arg(0) {
	case "inclusion":
		ok, err = inclusion(os.Stdin, *key)
	case "consistency":
		ok, err = consistency(os.Stdin, *key)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlogcheck %s: %v\n", flag.Arg(0), err)
		os.Exit(1)
	}
	fmt.Printf("ok: %s\n", ok)
}

// decode reads exactly one JSON object into v, refusing unknown fields and anything
// after it.
func decode(r io.Reader, v interface{}) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("reading the bundle: %v", err)
	}
	var rest json.RawMessage
	if err := dec.Decode(&rest); err != io.EOF {
		return errors.New("reading the bundle: data after the JSON object")
	}
	return nil
}

// verifier parses the bundle's verifier key, and checks it is the pinned one if any.
func verifier(vkey *string, pinned string) (note.Verifier, error) {
	if vkey == nil {
		return nil, errors.New("the bundle has no verifier_key")
	}
	if pinned != "" && *vkey != pinned {
		return nil, fmt.Errorf("the bundle's verifier_key %q is not the expected %q", *vkey, pinned)
	}
	v, err := note.NewVerifier(*vkey)
	if err != nil {
		return nil, fmt.Errorf("verifier_key %q: %v", *vkey, err)
	}
	return v, nil
}

// openCheckpoint opens a signed note with v alone and parses its text as a checkpoint.
func openCheckpoint(what string, text *string, v note.Verifier) (checkpoint, error) {
	if text == nil {
		return checkpoint{}, fmt.Errorf("the bundle has no %s", what)
	}
	n, err := note.Open([]byte(*text), note.VerifierList(v))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		if errors.As(err, &unverified) {
			return checkpoint{}, fmt.Errorf("%s: not signed by %s+%08x (%v)", what, v.Name(), v.KeyHash(), err)
		}
		return checkpoint{}, fmt.Errorf("%s: %v", what, err)
	}
	c, err := parseCheckpoint(n.Text)
	if err != nil {
		return checkpoint{}, fmt.Errorf("%s: %v", what, err)
	}
	return c, nil
}

// parseCheckpoint parses a C2SP tlog-checkpoint body: origin, decimal tree size, base64
// root hash, then optional extension lines, each line ending in a newline.
func parseCheckpoint(text string) (checkpoint, error) {
	if !strings.HasSuffix(text, "\n") {
		return checkpoint{}, errors.New("checkpoint text does not end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return checkpoint{}, fmt.Errorf("checkpoint text has %d line(s), not at least 3 (origin, size, root hash)", len(lines))
	}
	var c checkpoint
	c.origin = lines[0]
	if c.origin == "" {
		return checkpoint{}, errors.New("checkpoint origin line is empty")
	}
	size := lines[1]
	if size == "" || strings.Trim(size, "0123456789") != "" || (len(size) > 1 && size[0] == '0') {
		return checkpoint{}, fmt.Errorf("checkpoint tree size %q is not a decimal number without leading zeros", size)
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint tree size %q: %v", size, err)
	}
	c.size = n
	root, err := parseHash(lines[2])
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint root hash: %v", err)
	}
	c.root = root
	for i, ext := range lines[3:] {
		if ext == "" {
			return checkpoint{}, fmt.Errorf("checkpoint extension line %d is empty", i+1)
		}
		c.extensions = append(c.extensions, ext)
	}
	return c, nil
}

// parseHash decodes a hash: standard padded base64 of exactly 32 bytes, in its one
// canonical encoding.
func parseHash(s string) (tlog.Hash, error) {
	h, err := tlog.ParseHash(s)
	if err != nil {
		return tlog.Hash{}, fmt.Errorf("%q is not the base64 of %d bytes", s, tlog.HashSize)
	}
	if base64.StdEncoding.EncodeToString(h[:]) != s {
		return tlog.Hash{}, fmt.Errorf("%q is not canonical base64", s)
	}
	return h, nil
}

func parseProof(proof *[]string) ([]tlog.Hash, error) {
	if proof == nil {
		return nil, errors.New("the bundle has no proof")
	}
	hashes := make([]tlog.Hash, 0, len(*proof))
	for i, s := range *proof {
		h, err := parseHash(s)
		if err != nil {
			return nil, fmt.Errorf("proof[%d]: %v", i, err)
		}
		hashes = append(hashes, h)
	}
	return hashes, nil
}

func inclusion(r io.Reader, pinned string) (string, error) {
	var b inclusionBundle
	if err := decode(r, &b); err != nil {
		return "", err
	}
	v, err := verifier(b.VerifierKey, pinned)
	if err != nil {
		return "", err
	}
	c, err := openCheckpoint("checkpoint", b.Checkpoint, v)
	if err != nil {
		return "", err
	}
	switch {
	case b.Record == nil:
		return "", errors.New("the bundle has no record")
	case b.Index == nil:
		return "", errors.New("the bundle has no index")
	case b.TreeSize == nil:
		return "", errors.New("the bundle has no tree_size")
	}
	record := []byte(*b.Record)
	if bytes.IndexByte(record, '\n') >= 0 {
		return "", errors.New("record holds a newline: it must be one line, without its newline")
	}
	if *b.TreeSize != c.size {
		return "", fmt.Errorf("tree_size %d is not the checkpoint's tree size %d", *b.TreeSize, c.size)
	}
	if *b.Index < 0 || *b.Index >= c.size {
		return "", fmt.Errorf("index %d is outside the checkpoint's tree of %d record(s)", *b.Index, c.size)
	}
	proof, err := parseProof(b.Proof)
	if err != nil {
		return "", err
	}
	leaf := tlog.RecordHash(record)
	if err := tlog.CheckRecord(proof, c.size, c.root, *b.Index, leaf); err != nil {
		return "", fmt.Errorf("record %d (leaf hash %s) is not proved in the tree of size %d with root %s: %v",
			*b.Index, leaf, c.size, c.root, err)
	}
	return fmt.Sprintf("record %d is in the tree of size %d signed by %s (origin %q)",
		*b.Index, c.size, v.Name(), c.origin), nil
}

func consistency(r io.Reader, pinned string) (string, error) {
	var b consistencyBundle
	if err := decode(r, &b); err != nil {
		return "", err
	}
	v, err := verifier(b.VerifierKey, pinned)
	if err != nil {
		return "", err
	}
	old, err := openCheckpoint("old_checkpoint", b.OldCheckpoint, v)
	if err != nil {
		return "", err
	}
	cur, err := openCheckpoint("new_checkpoint", b.NewCheckpoint, v)
	if err != nil {
		return "", err
	}
	if old.origin != cur.origin {
		return "", fmt.Errorf("the checkpoints are of different logs: origin %q, then %q", old.origin, cur.origin)
	}
	if old.size == 0 {
		return "", errors.New("old_checkpoint has tree size 0: there is nothing to be consistent with")
	}
	if old.size > cur.size {
		return "", fmt.Errorf("old_checkpoint's tree size %d is larger than new_checkpoint's %d", old.size, cur.size)
	}
	proof, err := parseProof(b.Proof)
	if err != nil {
		return "", err
	}
	if err := tlog.CheckTree(proof, cur.size, cur.root, old.size, old.root); err != nil {
		return "", fmt.Errorf("the tree of size %d (root %s) is not proved a prefix of the tree of size %d (root %s): %v",
			old.size, old.root, cur.size, cur.root, err)
	}
	return fmt.Sprintf("the tree of size %d is a prefix of the tree of size %d, both signed by %s (origin %q)",
		old.size, cur.size, v.Name(), old.origin), nil
}
