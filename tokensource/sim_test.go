package tokensource_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/proctest"
	"github.com/tokenkeep/tokenkeep/storage"
)

// The fault-schedule simulation: M long-running processes share one file
// store and one rotating provider with reuse detection, and a seeded
// schedule drives them through tokens, Invalidate, Put, Revoke, Close,
// SIGKILL, failing and slow stores, and provider faults. An oracle checks
// DESIGN.md's invariants 1 to 4 as it goes:
//
//   - the stored generation never decreases;
//   - after a Revoke was saved and before the next Put, no process is
//     handed an access token it had not been handed before the Revoke;
//   - every reuse detection is explained by the refresh request that retired
//     the token, which the provider records with the sender's process id:
//     that process was killed before the reuse, or the request's answer was
//     over before the reuse and was held, slowed or cut, or found its client
//     gone (an in-doubt request), or that process's Close reported the token
//     lost because the store kept failing, as the schedule made it. A kill explains any earlier request of
//     the process killed: the oracle cannot see whether its answer was
//     saved before the kill;
//   - at the end, after a clean Close everywhere, a live stored session
//     holds the newest refresh token the provider issued for it.
//
// Set TOKENKEEP_SIM_SEEDS (comma-separated) to run other seeds, and
// TOKENKEEP_SIM_STEPS for longer schedules. A seed fixes the schedule; the
// interleaving of real processes still varies from run to run.
func TestSimulation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes for a while")
	}
	seeds := []uint64{1, 2}
	if v := os.Getenv("TOKENKEEP_SIM_SEEDS"); v != "" {
		seeds = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
			if err != nil {
				t.Fatalf("TOKENKEEP_SIM_SEEDS: %v", err)
			}
			seeds = append(seeds, n)
		}
	}
	steps := 60
	if v := os.Getenv("TOKENKEEP_SIM_STEPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("TOKENKEEP_SIM_STEPS=%q: want a number of steps, 1 or more", v)
		}
		steps = n
	}
	var total simTotals
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			tot := runSimulation(t, seed, 4, steps)
			total.add(tot)
			t.Logf("seed %d: %s", seed, tot)
		})
	}
	t.Logf("all %d schedules: %s", len(seeds), total)
}

// simTotals counts what a schedule did.
type simTotals struct {
	schedules, processes, ops, faults, kills int
	reuse, byKill, byLate, byReported        int
	violations                               int
	grants                                   int64
}

func (a *simTotals) add(b simTotals) {
	a.schedules += b.schedules
	a.processes += b.processes
	a.ops += b.ops
	a.faults += b.faults
	a.kills += b.kills
	a.reuse += b.reuse
	a.byKill += b.byKill
	a.byLate += b.byLate
	a.byReported += b.byReported
	a.violations += b.violations
	a.grants += b.grants
}

func (a simTotals) String() string {
	return fmt.Sprintf("%d schedules, %d processes, %d operations, %d faults injected, %d kills, %d refresh grants, %d reuse detections (%d by a kill of the process whose request retired the token, %d by its answer lost in doubt, %d by its Close reporting the token lost while the store failed), %d invariant violations",
		a.schedules, a.processes, a.ops, a.faults, a.kills, a.grants, a.reuse, a.byKill, a.byLate, a.byReported, a.violations)
}

// simProc is one simulation child, as the parent sees it.
type simProc struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	mu      sync.Mutex          // guards pending and exited
	pending map[int]chan string // answers awaited, by command id
	exited  bool                //
	done    chan struct{}       // closed once the process has exited
}

func startSimProc(t *testing.T, env []string) *simProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, proctest.EnvChild+"=1", proctest.EnvSim+"=1")...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &simProc{cmd: cmd, in: in, pending: make(map[int]chan string), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			id, answer, _ := strings.Cut(sc.Text(), " ")
			n, _ := strconv.Atoi(id)
			p.mu.Lock()
			ch := p.pending[n]
			delete(p.pending, n)
			p.mu.Unlock()
			if ch != nil {
				ch <- answer
			}
		}
		cmd.Wait()
		p.mu.Lock()
		p.exited = true
		for n, ch := range p.pending {
			ch <- "dead"
			delete(p.pending, n)
		}
		p.mu.Unlock()
	}()
	return p
}

// send issues a command and returns the channel its answer arrives on.
func (p *simProc) send(id int, op string) <-chan string {
	ch := make(chan string, 1)
	p.mu.Lock()
	if p.exited {
		p.mu.Unlock()
		ch <- "dead"
		return ch
	}
	p.pending[id] = ch
	p.mu.Unlock()
	if _, err := fmt.Fprintf(p.in, "%d %s\n", id, op); err != nil {
		p.mu.Lock()
		if c, ok := p.pending[id]; ok {
			delete(p.pending, id)
			c <- "dead"
		}
		p.mu.Unlock()
	}
	return ch
}

func (p *simProc) kill() { p.cmd.Process.Kill(); p.in.Close() }

func (p *simProc) stop() { p.in.Close(); <-p.done }

func runSimulation(t *testing.T, seed uint64, m, steps int) simTotals {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	reproduce := fmt.Sprintf("reproduce with TOKENKEEP_SIM_SEEDS=%d go test -race -run 'TestSimulation' ./tokensource/", seed)
	srv := authserver.New(authserver.Config{Rotate: true, ReuseDetection: true, AccessTTL: time.Second})
	t.Cleanup(srv.Close)
	child, st := ledgerEnv(t, srv)
	ctx := context.Background()
	tot := simTotals{schedules: 1}
	procs := make([]*simProc, m)
	for i := range procs {
		procs[i] = startSimProc(t, child.Env)
		tot.processes++
	}
	defer func() {
		for _, p := range procs {
			p.kill()
		}
	}()

	var (
		mu       sync.Mutex      // guards the oracle's state below
		ended    bool            // a Revoke was saved, and no Put was sent since or is under way
		epoch    int             // +1 whenever ended changes or a Put is sent
		puts     int             // Puts under way, or answered ErrNotSaved and still being saved
		unsaved  = map[int]int{} // per process, Puts answered ErrNotSaved: saved in the background, or by Close
		answers  = map[string]int{}
		examples = map[string]string{}       // an answer's detail, per kind of answer
		killed   = map[int]time.Time{}       // when each killed process was killed, by pid
		gaveUp   = map[int]time.Time{}       // when a process's Close last reported a token lost (its store failing), by pid
		handed   = map[int]map[string]bool{} // the access tokens each process was handed, by pid
		gen      uint64
		failures []string
	)
	violate := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	nextID := 0
	for step := range steps {
		var wg sync.WaitGroup
		for range 1 + rng.IntN(3) {
			nextID++
			id, pi := nextID, rng.IntN(m)
			p := procs[pi]
			var op string
			switch r := rng.IntN(100); {
			case r < 38:
				op = "token"
			case r < 48:
				op = "invalidate"
			case r < 53:
				b, _ := json.Marshal(srv.Mint("openid", "offline_access"))
				op = "put " + string(b)
				mu.Lock()
				ended, epoch, puts = false, epoch+1, puts+1
				mu.Unlock()
			case r < 56:
				op = "revoke"
			case r < 61:
				op = "reopen"
			case r < 65:
				op = "failsaves " + []string{"on", "off"}[rng.IntN(2)]
			case r < 69:
				op = fmt.Sprintf("slow %d", []int{0, 0, 50, 400}[rng.IntN(4)])
			case r < 77:
				// Let access tokens (1 s) expire, so that the next
				// calls refresh.
				pause := time.NewTimer(time.Duration(300+rng.IntN(900)) * time.Millisecond)
				<-pause.C
				continue
			case r < 81:
				tot.kills++
				killed[p.cmd.Process.Pid] = time.Now()
				p.kill()
				mu.Lock()
				puts -= unsaved[pi]
				unsaved[pi] = 0
				mu.Unlock()
				procs[pi] = startSimProc(t, child.Env)
				tot.processes++
				continue
			default:
				tot.faults++
				switch rng.IntN(5) {
				case 0:
					srv.Inject(authserver.EndpointToken, authserver.Fault{Status: 503})
				case 1:
					srv.Inject(authserver.EndpointToken, authserver.Fault{Status: 429, RetryAfter: "1"})
				case 2:
					srv.Inject(authserver.EndpointToken, authserver.Fault{Delay: 1500 * time.Millisecond})
				case 3:
					srv.Inject(authserver.EndpointToken, authserver.Fault{Drop: true})
				case 4:
					// Processed, answered after the client's refresh
					// deadline: an in-doubt request.
					srv.Inject(authserver.EndpointToken, authserver.Fault{SlowBody: 5 * time.Second})
				}
				continue
			}
			tot.ops++
			mu.Lock()
			wasEnded, sentEpoch, putsAtSend := ended, epoch, puts
			mu.Unlock()
			pid := p.cmd.Process.Pid
			ch := p.send(id, op)
			wg.Add(1)
			go func() {
				defer wg.Done()
				answer := <-ch
				word, detail, _ := strings.Cut(answer, " ")
				verb, _, _ := strings.Cut(op, " ")
				mu.Lock()
				defer mu.Unlock()
				answers[verb+":"+word]++
				if detail != "" && examples[verb+":"+word] == "" {
					examples[verb+":"+word] = detail
				}
				switch {
				case op == "token" && word == proctest.OK:
					// A process may go on serving, from memory, a fresh token
					// it was handed before: the fresh path reads no store. A
					// token it was never handed is a Revoke undone.
					before := handed[pid][detail]
					if handed[pid] == nil {
						handed[pid] = map[string]bool{}
					}
					handed[pid][detail] = true
					if wasEnded && ended && epoch == sentEpoch && !before && srv.AccessTokenActive(detail) {
						failures = append(failures, fmt.Sprintf("step %d: process %d was handed a live access token it had not had before, after a Revoke was saved and before any Put", step, pi))
					}
				case verb == "put" && word == "notsaved":
					unsaved[pi]++
				case verb == "put":
					puts--
				case verb == "reopen" && word == "lost":
					// Close could not save the newest token: the store was
					// failing as the schedule asked. A reported loss, which
					// explains a later reuse of the token it replaced.
					gaveUp[pid] = time.Now()
					puts -= unsaved[pi]
					unsaved[pi] = 0
				case verb == "reopen" && word == proctest.Closed, word == "dead":
					puts -= unsaved[pi] // saved by Close, or gone with the process
					unsaved[pi] = 0
				case op == "revoke" && word == proctest.Revoked && puts == 0 && epoch == sentEpoch && putsAtSend == 0:
					ended, epoch = true, epoch+1
				case word == proctest.Failed:
					if strings.Contains(detail, "unknown operation") || strings.Contains(detail, "the login to put") {
						failures = append(failures, fmt.Sprintf("step %d: process %d: %s", step, pi, detail))
					}
				}
			}()
		}
		wg.Wait()
		rec, err := st.Load(ctx, proctest.Entry)
		if err != nil {
			violate("step %d: the store cannot be read: %v", step, err)
			continue
		}
		if rec.Generation < gen {
			violate("step %d: the stored generation went from %d to %d", step, gen, rec.Generation)
		}
		gen = rec.Generation
		mu.Lock()
		if ended && puts == 0 && rec.State != storage.Ended {
			failures = append(failures, fmt.Sprintf("step %d: the store holds a live session after a Revoke was saved, with no Put since", step))
		}
		mu.Unlock()
	}

	// Settle: no more faults, saves work, every process closes cleanly.
	for _, p := range procs {
		nextID++
		<-p.send(nextID, "failsaves off")
		nextID++
		<-p.send(nextID, "slow 0")
	}
	for _, p := range procs {
		nextID++
		if a := <-p.send(nextID, "reopen"); strings.HasPrefix(a, "lost") {
			violate("a clean Close lost a token: %s", a)
		}
		p.stop()
	}
	s := srv.Stats()
	tot.grants = s.RefreshGrants
	pids := map[string]int{}
	for pid := range killed {
		pids[proctest.SimUserAgent(pid)] = pid
	}
	for pid := range gaveUp {
		pids[proctest.SimUserAgent(pid)] = pid
	}
	// explained reports why the answer to sp never reached a process that
	// kept it, by the time at: "late" for an answer lost in doubt and over
	// by then, "kill" for a sender killed by then, "reported" for a sender
	// whose Close reported a token lost by then, "" when nothing explains
	// it.
	explained := func(sp authserver.Spend, at time.Time) string {
		k, wasKilled := killed[pids[sp.By]]
		g, reported := gaveUp[pids[sp.By]]
		switch {
		case sp.Lost && !sp.Done.IsZero() && !at.Before(sp.Done):
			return "late" // held, slowed or cut, or the client had gone: the request was in doubt
		case wasKilled && !k.After(at):
			return "kill" // the process that sent the request died with its answer
		case reported && !g.After(at) && !g.Before(sp.At):
			return "reported" // its store failed until Close, which said the token was lost
		}
		return ""
	}
	for _, r := range srv.Reuses() {
		tot.reuse++
		switch explained(r.Spent, r.At) {
		case "late":
			tot.byLate++
		case "kill":
			tot.byKill++
		case "reported":
			tot.byReported++
		default:
			if r.Spent.Lost {
				violate("a refresh token was presented again at %v while the request that retired it, from %s, was still being answered: two processes redeemed it at once",
					r.At.Format(time.StampMilli), r.Spent.By)
				continue
			}
			violate("a reuse detection at %v of a refresh token retired at %v by %s, whose answer was sent whole, which was not killed and reported no loss: a rotated refresh token was lost",
				r.At.Format(time.StampMilli), r.Spent.At.Format(time.StampMilli), r.Spent.By)
		}
	}
	if n := s.ReuseDetections; int(n) != tot.reuse {
		violate("the provider counted %d reuse detections but recorded %d", n, tot.reuse)
	}
	if rec, err := st.Load(ctx, proctest.Entry); err == nil && rec.State == storage.Live && rec.Token.RefreshToken != "" {
		if sp, retired := srv.Retirement(rec.Token.RefreshToken); retired {
			if why := explained(sp, time.Now()); why != "" {
				t.Logf("the stored refresh token was rotated away by %s, whose answer was lost (%s): the session will end at its next refresh", sp.By, why)
			} else {
				violate("the stored refresh token was rotated away by %s at %v, whose answer was sent whole, which was not killed and reported no loss: a newer one the provider issued was lost",
					sp.By, sp.At.Format(time.StampMilli))
			}
		}
	}
	tot.violations = len(failures)
	t.Logf("answers: %v", answers)
	if testing.Verbose() {
		for k, v := range examples {
			if !strings.HasPrefix(k, "token:ok") {
				t.Logf("example %s: %s", k, v)
			}
		}
	}
	for _, f := range failures {
		t.Error(f)
	}
	if len(failures) > 0 {
		t.Log(reproduce)
	}
	return tot
}
