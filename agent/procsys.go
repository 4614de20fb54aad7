package agent

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// readProcSysInt reads a /proc/sys file that holds one integer
// (parseProcSysInt). Files under /proc/sys/net are those of the network
// namespace of the thread that opens them: the agent's, as no goroutine
// that calls this has switched its thread to another.
func readProcSysInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return parseProcSysInt(b)
}

// parseProcSysInt parses what a /proc/sys file of one integer holds, as
// the kernel writes it (proc_dointvec): the number in decimal, within 32
// bits, with a '-' before a negative one and no sign or leading zero
// otherwise, and a newline.
func parseProcSysInt(b []byte) (int, error) {
	s, ok := strings.CutSuffix(string(b), "\n")
	if !ok {
		return 0, fmt.Errorf("%q: no newline", b)
	}
	v, err := strconv.ParseInt(s, 10, 32)
	if err != nil || s != strconv.FormatInt(v, 10) {
		return 0, fmt.Errorf("%q is not an integer", s)
	}
	return int(v), nil
}
