package boottime

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNowIsUptime: Now reads the clock /proc/uptime shows (the time since
// boot, suspend included), not the wall clock.
func TestNowIsUptime(t *testing.T) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	now := Now()
	f, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	uptime := time.Duration(f * float64(time.Second))
	if d := (now.Sub(time.Unix(0, 0)) - uptime).Abs(); d > time.Second {
		t.Fatalf("Now is %v after its epoch, /proc/uptime says %v", now.Sub(time.Unix(0, 0)), uptime)
	}
	if later := Now(); later.Before(now) {
		t.Fatalf("Now went back: %v, then %v", now, later)
	}
}
