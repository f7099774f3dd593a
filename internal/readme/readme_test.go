package readme

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

var goBlock = regexp.MustCompile("(?s)```go\n(.*?)```")

// TestREADMECodeCompiles builds every Go code block of the README as a
// program of this module, so that the README cannot drift from the API.
func TestREADMECodeCompiles(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := goBlock.FindAllSubmatch(readme, -1)
	if len(blocks) < 3 {
		t.Fatalf("found %d Go blocks in the README, want at least 3", len(blocks))
	}
	for i, b := range blocks {
		// The directory must be inside the module for its imports to resolve.
		dir, err := os.MkdirTemp(".", "block-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "main.go"), b[1], 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("go", "vet", "./"+dir).CombinedOutput()
		if err != nil {
			t.Errorf("README Go block %d does not compile:\n%s", i+1, out)
		}
	}
}
