package dist

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	// citedTest is a test, fuzz target or benchmark as README names it
	// (TestMixedCluster/udp names the function TestMixedCluster).
	citedTest   = regexp.MustCompile(`\b(?:Test|Fuzz|Benchmark)[A-Z][A-Za-z0-9_]*`)
	definedTest = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)[A-Z][A-Za-z0-9_]*)\(`)
	// citedMetric is a metric as README names it, labels left off.
	citedMetric   = regexp.MustCompile(`\bagentd_[a-z0-9_]+`)
	definedMetric = regexp.MustCompile(`"(agentd_[a-z0-9_]+)"`)
)

// TestREADMENamesExist: every test, fuzz target and benchmark README cites
// (as the proof of what it says) is a function of some _test.go file, and
// every agentd_* metric it names is a name the code registers. A test
// renamed or removed, or a metric renamed, leaves README pointing at
// nothing; this lists what it cites that no longer exists.
func TestREADMENamesExist(t *testing.T) {
	root, readme := repoREADME(t)
	tests, metrics := map[string]bool{}, map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.HasSuffix(path, "_test.go") {
			for _, m := range definedTest.FindAllSubmatch(src, -1) {
				tests[string(m[1])] = true
			}
			return nil
		}
		for _, m := range definedMetric.FindAllSubmatch(src, -1) {
			metrics[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A pattern that matched nothing would pass vacuously.
	citedTests := missing(t, "test", citedTest.FindAllString(string(readme), -1), tests)
	citedMetrics := missing(t, "metric", citedMetric.FindAllString(string(readme), -1), metrics)
	if citedTests < 50 || citedMetrics < 10 {
		t.Errorf("README cites %d tests and %d metrics; expected far more (has the pattern or README's style changed?)", citedTests, citedMetrics)
	}

	// The other way round: every metric the code registers is in README's
	// list of them, so a new metric is documented where operators look.
	list := metricsList(t, string(readme))
	listed := map[string]bool{}
	for _, name := range citedMetric.FindAllString(list, -1) {
		listed[name] = true
	}
	for name := range metrics {
		if !listed[name] {
			t.Errorf("the code registers the metric %s, which README's **Metrics.** list leaves out", name)
		}
	}
}

// repoREADME returns the repository's root and its README.
func repoREADME(t *testing.T) (string, []byte) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return root, readme
}

// metricsList is README's paragraph that lists the metrics: from
// "**Metrics.**" to the next blank line.
func metricsList(t *testing.T, readme string) string {
	t.Helper()
	_, list, ok := strings.Cut(readme, "**Metrics.**")
	if !ok {
		t.Fatal("README has no **Metrics.** paragraph")
	}
	list, _, _ = strings.Cut(list, "\n\n")
	return list
}

// missing reports each distinct name of cited that defined lacks, and
// returns how many distinct names were cited.
func missing(t *testing.T, what string, cited []string, defined map[string]bool) int {
	t.Helper()
	slices.Sort(cited)
	cited = slices.Compact(cited)
	for _, name := range cited {
		if !defined[name] {
			t.Errorf("README cites the %s %s, which does not exist (renamed or removed?)", what, name)
		}
	}
	return len(cited)
}
