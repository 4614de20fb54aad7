package cniplugin

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The table and chain in which bridge (containernetworking/plugins v1.5 and
// later) masquerades pods with nftables: one rule per pod address, in the
// inet family.
const (
	nftMasqTable = "cni_plugins_masquerade"
	nftMasqChain = "masq_checks"
)

// nftMasq is bridge's masquerade rules in nftables (see masqChains), found
// by the hash their comment starts with (see nftMasqHash). Without the nft
// command, or without the table or chain, there are none: bridge makes
// them with nft too.
type nftMasq struct{}

// nftMasqHash starts the comment of the masquerade rules of network's
// attachment containerID, ifName (the plugins' ip.hashForInstance).
func nftMasqHash(network, containerID, ifName string) string {
	hash := func(s string) string {
		sum := sha512.Sum512([]byte(s))
		return hex.EncodeToString(sum[:])[:16]
	}
	return hash(network) + "-" + hash(ifName+":"+containerID)
}

// Has says whether the attachment's rules are there.
func (m nftMasq) Has(network, containerID, ifName string) (bool, error) {
	handles, err := m.rules(network, containerID, ifName)
	return len(handles) > 0, err
}

// Remove deletes the attachment's rules.
func (m nftMasq) Remove(network, containerID, ifName string) error {
	handles, err := m.rules(network, containerID, ifName)
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range handles {
		if err := nft("delete", "rule", "inet", nftMasqTable, nftMasqChain, "handle", strconv.Itoa(h)); err != nil && !errors.Is(err, errNoNFTObject) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rules are the handles of the attachment's rules.
func (nftMasq) rules(network, containerID, ifName string) ([]int, error) {
	var out bytes.Buffer
	err := nftOut(&out, "-j", "list", "chain", "inet", nftMasqTable, nftMasqChain)
	if errors.Is(err, errNoNFTObject) || errors.Is(err, exec.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	handles, err := nftRuleHandles(out.Bytes(), nftMasqHash(network, containerID, ifName))
	if err != nil {
		return nil, fmt.Errorf("nft -j list chain inet %s %s: %w", nftMasqTable, nftMasqChain, err)
	}
	return handles, nil
}

// nftRuleHandles reads the output of `nft -j list chain` (list) for the
// handles of the rules whose comment starts with prefix, in the order
// listed. The output is one object whose "nftables" array holds a
// metainfo, the chain and then a {"rule": {…}} per rule; only the rules'
// "handle" and "comment" are read.
func nftRuleHandles(list []byte, prefix string) ([]int, error) {
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Handle  int    `json:"handle"`
				Comment string `json:"comment"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(list, &doc); err != nil {
		return nil, err
	}
	var handles []int
	for _, e := range doc.Nftables {
		if e.Rule != nil && strings.HasPrefix(e.Rule.Comment, prefix) {
			handles = append(handles, e.Rule.Handle)
		}
	}
	return handles, nil
}

// errNoNFTObject is nft's failure for a table, chain or rule that is not
// there (ENOENT, said on the first line of its message).
var errNoNFTObject = errors.New("no such nftables object")

func nft(args ...string) error { return nftOut(nil, args...) }

// nftTimeout bounds one nft command: it answers in milliseconds, and one
// that hangs (its netlink socket stuck) must not hold a pod's DEL, or an
// ADD queued behind it, for good.
var nftTimeout = 10 * time.Second

// nftOut runs nft with args, its output to stdout. A missing table, chain
// or rule is errNoNFTObject; no nft command, exec.ErrNotFound; one not done
// within nftTimeout is killed and its error says so.
func nftOut(stdout *bytes.Buffer, args ...string) error {
	path, err := exec.LookPath("nft")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), nftTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.WaitDelay = time.Second // a child left holding stderr
	cmd.Stderr = &stderr
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("nft %s: not done within %v, killed", strings.Join(args, " "), nftTimeout)
		}
		msg := strings.TrimSpace(stderr.String())
		// "Error: No such file or directory", or, from some releases and
		// for a rule deleted by a handle gone since the listing, "Error:
		// Could not process rule: No such file or directory" (knftables
		// reads the first line alike).
		if first, _, _ := strings.Cut(msg, "\n"); strings.Contains(first, "No such file or directory") {
			return fmt.Errorf("nft %s: %w", strings.Join(args, " "), errNoNFTObject)
		}
		return fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return nil
}
