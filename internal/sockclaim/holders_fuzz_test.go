package sockclaim

import (
	"fmt"
	"maps"
	"strings"
	"testing"
)

// unixTable writes /proc/net/unix as the kernel does (unix_seq_show) for
// sockets with the given inodes and names ("" for one not bound).
func unixTable(inodes []uint32, names []string) []byte {
	var b strings.Builder
	b.WriteString("Num       RefCount Protocol Flags    Type St Inode Path\n")
	for i, name := range names {
		fmt.Fprintf(&b, "%016x: %08X %08X %08X %04X %02X %5d", 0xffff8a0000000000+uint64(i)*0x40, 2, 0, 0x10000*(i%2), 1+i%5, 1+i%3, inodes[i])
		if name != "" {
			b.WriteString(" " + name)
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// FuzzBoundInodes: whatever /proc/net/unix holds, boundInodes names only
// sockets with a decimal inode on a line that ends in a space and addr.
// For a table the kernel wrote, of sockets bound to names with any bytes
// but a newline (blanks at either end or inside, "@" for NUL, names that
// start or end like addr, addr itself, several times), or not bound, it
// finds exactly the inodes of those bound to addr.
func FuzzBoundInodes(f *testing.F) {
	f.Add("@agentd-agent", "@agentd-agent\x00@agentd-agent \x00\x00 @agentd-agent\x00@agentd-udp-agent/flannel0\x00/run/x sock", []byte{1, 2, 3, 4, 5, 6}, []byte("0000: 00000002 00000000 00010000 0001 01 777 @agentd-agent\n"))
	f.Add("@agentd-udp-agent/flannel0", "@agentd-udp-agent/flannel0\t\x00@agentd-udp-agent/flannel0\x00@agentd-udp-agent/flannel", []byte{0xff, 0xff, 0xff, 0xff, 9}, []byte("Num       RefCount Protocol Flags    Type St Inode Path\n"))
	f.Add("@x", "@x\x00@x\x00@x\v\x00\x00@x @x", []byte{}, []byte("a b c d e f 12 @x\na b c d e f 1x @x\n a  b c d e f 3 @x\n"))
	f.Add("Path", "", []byte{}, []byte("Num       RefCount Protocol Flags    Type St Inode Path\n"))
	f.Fuzz(func(t *testing.T, addr, nameList string, inodeBytes, raw []byte) {
		for key := range boundInodes(raw, addr) {
			inode, ok := strings.CutPrefix(key, "socket:[")
			inode, ok2 := strings.CutSuffix(inode, "]")
			if !ok || !ok2 || inode == "" || strings.Trim(inode, "0123456789") != "" {
				t.Fatalf("boundInodes(%q, %q): %q", raw, addr, key)
			}
			found := false
			for _, l := range strings.Split(string(raw), "\n") {
				found = found || strings.HasSuffix(l, " "+addr) && strings.Contains(l, " "+inode+" ")
			}
			if !found {
				t.Fatalf("boundInodes(%q, %q): %q, on no line ending in the name", raw, addr, key)
			}
		}

		if strings.Contains(addr, "\n") {
			return
		}
		names := strings.Split(strings.ReplaceAll(nameList, "\n", ""), "\x00")
		inodes := make([]uint32, len(names))
		want := map[string]bool{}
		for i, name := range names {
			inodes[i] = uint32(i) + 1
			if i < len(inodeBytes) {
				inodes[i] = uint32(inodeBytes[i]) << (8 * (i % 4))
			}
			if name != "" && name == addr {
				want[fmt.Sprintf("socket:[%d]", inodes[i])] = true
			}
		}
		table := unixTable(inodes, names)
		if got := boundInodes(table, addr); !maps.Equal(got, want) {
			t.Fatalf("boundInodes of\n%s for %q: %v, want %v", table, addr, got, want)
		}
	})
}
