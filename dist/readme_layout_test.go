package dist

import (
	"io/fs"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestREADMESourceLayout: every directory of Go packages is named in
// README's Source layout table, by its path or, within its row, by a part
// of it below the top directory (`cluster` for tests/cluster, `nstest` or
// `internal/nstest` for backend/internal/nstest); a directory under one
// that is named (internal/healthzaddr/healthzaddrtest) is its part. A
// package added without a line there is one a reader of the layout never
// finds.
func TestREADMESourceLayout(t *testing.T) {
	root, readme := repoREADME(t)
	_, layout, ok := strings.Cut(string(readme), "\n## Source layout\n")
	if !ok {
		t.Fatal("README has no section ## Source layout")
	}
	layout, _, _ = strings.Cut(layout, "\n## ")
	named := map[string]bool{}
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(layout, -1) {
		named[strings.TrimSuffix(m[1], "/")] = true
	}
	dirs := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bin" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") {
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			dirs[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 20 {
		t.Fatalf("found %d directories of Go packages; expected more", len(dirs))
	}
	for _, dir := range slices.Sorted(maps.Keys(dirs)) {
		if !layoutNames(dir, named) {
			t.Errorf("README's Source layout does not name %s", dir)
		}
	}
}

// layoutNames reports whether the Source layout names dir: by its whole
// path, or by a run of its parts that does not start at the top directory
// (internal/nstest, nstest), or by naming a directory above it other than
// the top one.
func layoutNames(dir string, named map[string]bool) bool {
	parts := strings.Split(dir, "/")
	for end := len(parts); end > 0; end-- {
		// The top directory's own name (`internal`) does not name what it
		// holds; its row lists that.
		if (end == len(parts) || end > 1) && named[strings.Join(parts[:end], "/")] {
			return true
		}
		for start := 1; start < end; start++ {
			if named[strings.Join(parts[start:end], "/")] {
				return true
			}
		}
	}
	return false
}
