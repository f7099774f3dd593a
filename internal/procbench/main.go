// Command procbench measures what happens when N processes share one
// session and its access token expires: how many refreshes reach the token
// endpoint per expiry, how many reuse detections the provider records, and
// how many processes end up without a token. It compares tokenkeep (a
// Source over the encrypted file store) with the plain x/oauth2 approach
// (each process runs Config.TokenSource and saves the token to a JSON file),
// against the embedded authorization server with rotation and reuse
// detection on, and prints a Markdown table.
//
//	go run ./internal/procbench [-n 1,2,8,32] [-expiries 5]
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/proctest"
)

func main() {
	if os.Getenv(proctest.EnvChild) != "" {
		os.Exit(proctest.Main(os.Stdout))
	}
	ns := flag.String("n", "1,2,8,32", "comma-separated process counts")
	expiries := flag.Int("expiries", 5, "consecutive expiries per process count")
	flag.Parse()
	if err := run(*ns, *expiries); err != nil {
		fmt.Fprintln(os.Stderr, "procbench:", err)
		os.Exit(1)
	}
}

type result struct {
	refreshes, reuse, failed, calls int
	took                            time.Duration
}

func run(ns string, expiries int) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	key := make([]byte, 32)
	rand.Read(key)
	os.Setenv(proctest.EnvKey, hex.EncodeToString(key))

	fmt.Printf("| processes | client | refresh requests per expiry | reuse detections | calls without a token | time per expiry |\n")
	fmt.Printf("|---:|---|---:|---:|---:|---:|\n")
	for _, f := range strings.Split(ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("bad process count %q", f)
		}
		for _, mode := range []string{proctest.ModeFile, proctest.ModeXOAuth2} {
			r, err := measure(exe, mode, n, expiries)
			if err != nil {
				return err
			}
			name := "tokenkeep"
			if mode == proctest.ModeXOAuth2 {
				name = "x/oauth2"
			}
			fmt.Printf("| %d | %s | %.2f | %d | %d of %d | %v |\n", n, name,
				float64(r.refreshes)/float64(expiries), r.reuse, r.failed, r.calls,
				(r.took / time.Duration(expiries)).Round(time.Millisecond))
		}
	}
	return nil
}

func measure(exe, mode string, n, expiries int) (result, error) {
	srv := authserver.New(authserver.Config{Rotate: true, ReuseDetection: true})
	defer srv.Close()
	dir, err := os.MkdirTemp("", "procbench-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	if err := proctest.Prime(ctx, mode, dir, srv.Mint("offline_access")); err != nil {
		return result{}, err
	}
	child := proctest.Child{Path: exe, Env: []string{
		proctest.EnvMode + "=" + mode,
		proctest.EnvDir + "=" + dir,
		proctest.EnvTokenURL + "=" + srv.Endpoint().TokenURL,
	}}
	var r result
	for range expiries {
		if err := proctest.Expire(ctx, mode, dir); err != nil {
			return result{}, err
		}
		g, err := child.Start(n)
		if err != nil {
			return result{}, err
		}
		start := time.Now()
		g.Release()
		for _, line := range g.Wait() {
			r.calls++
			if !strings.HasPrefix(line, proctest.OK+" ") {
				r.failed++
			}
		}
		r.took += time.Since(start)
	}
	st := srv.Stats()
	r.refreshes, r.reuse = int(st.RefreshGrants), int(st.ReuseDetections)
	return r, nil
}
