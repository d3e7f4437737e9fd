package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/auth"
)

// WorkerEnv marks a process started as a load worker (used by tests, whose
// binary re-executes itself).
const WorkerEnv = "HERALD_BENCH_WORKER"

// histShards spreads the latency histogram's atomic counters over a few
// copies (by connection); a few, so that they stay in cache.
const histShards = 4

// Target says where and as which app the load connects.
type Target struct {
	Addr   string `json:"addr"` // host:port
	AppID  string `json:"app_id"`
	Key    string `json:"key"`
	Secret string `json:"secret"`
}

// ChannelSpec names the channels connections subscribe to: connection i is on
// Prefix + strconv.Itoa(i % Count). Kind is public, private or presence (the
// prefix must match what the server expects, e.g. "private-").
type ChannelSpec struct {
	Prefix string `json:"prefix"`
	Count  int    `json:"count"`
}

func (s ChannelSpec) name(i int) string { return s.Prefix + strconv.Itoa(i%s.Count) }

// command is one request from the coordinator to a worker.
type command struct {
	ID int    `json:"id"`
	Op string `json:"op"`

	// connect
	Target   Target      `json:"target,omitempty"`
	Src      []string    `json:"src,omitempty"`
	First    int         `json:"first,omitempty"`
	Count    int         `json:"count,omitempty"`
	Channels ChannelSpec `json:"channels,omitempty"`
	// ChurnFrom > 0: connections numbered ChurnFrom or more are churners: they
	// connect without subscribing (presence churn).
	ChurnFrom int           `json:"churn_from,omitempty"`
	Bare      bool          `json:"bare,omitempty"`
	Parallel  int           `json:"parallel,omitempty"`
	Timeout   time.Duration `json:"timeout,omitempty"`

	// seq tracking (fanout)
	Seqs int `json:"seqs,omitempty"`

	// client events / churn
	Rate     float64       `json:"rate,omitempty"`     // client events per second per sender, churn cycles per second per churner
	Senders  int           `json:"senders,omitempty"`  // senders per channel (first connections of each channel)
	Duration time.Duration `json:"duration,omitempty"` // how long to send / churn
	Size     int           `json:"size,omitempty"`     // data bytes
	Full     bool          `json:"full,omitempty"`     // stats: include histograms and per-channel counts
}

// reply is a worker's answer (ID = the command's) or notification (ID 0).
type reply struct {
	ID    int    `json:"id"`
	Event string `json:"event,omitempty"`
	Err   string `json:"err,omitempty"`

	Conns      int     `json:"conns"`
	Failed     int     `json:"failed,omitempty"`
	Dropped    int64   `json:"dropped,omitempty"`
	Errors     int64   `json:"errors,omitempty"`
	FirstError string  `json:"first_error,omitempty"`
	Recv       int64   `json:"recv"`
	Bytes      int64   `json:"bytes"`
	Sent       int64   `json:"sent,omitempty"`
	Joins      int64   `json:"joins,omitempty"`
	Leaves     int64   `json:"leaves,omitempty"`
	Seconds    float64 `json:"seconds,omitempty"`

	Hist       [][2]int64 `json:"hist,omitempty"`
	JoinHist   [][2]int64 `json:"join_hist,omitempty"`
	MemberHist [][2]int64 `json:"member_hist,omitempty"`
	ConnHist   [][2]int64 `json:"conn_hist,omitempty"`
	PerChannel []chanJSON `json:"per_channel,omitempty"`

	// seq notification
	Seq   int64 `json:"seq,omitempty"`
	First int64 `json:"first,omitempty"`
	Last  int64 `json:"last,omitempty"`
}

type chanJSON struct {
	I       int   `json:"i"`
	Subs    int64 `json:"subs"`
	Recv    int64 `json:"recv"`
	Sent    int64 `json:"sent"`
	Added   int64 `json:"added"`
	Removed int64 `json:"removed"`
	Joins   int64 `json:"joins"`
	Leaves  int64 `json:"leaves"`
}

type chanStat struct {
	i       int
	name    string
	subs    atomic.Int64 // subscribed connections (subscribers; churners count while joined via joins/leaves)
	sent    atomic.Int64 // client events sent on it
	added   atomic.Int64 // member_added received by its observers
	removed atomic.Int64
	joins   atomic.Int64 // churn subscribes completed
	leaves  atomic.Int64 // churn unsubscribes sent
}

type seqRec struct {
	n     atomic.Int64
	first atomic.Int64
	last  atomic.Int64
}

// worker holds connections for the coordinator.
type worker struct {
	out    *json.Encoder
	outMu  sync.Mutex
	target Target

	mu       sync.Mutex
	conns    []*clientConn
	channels map[int]*chanStat
	spec     ChannelSpec

	bytes      atomic.Int64
	dropped    atomic.Int64
	errs       atomic.Int64
	firstErr   atomic.Pointer[string]
	stopping   atomic.Bool
	hist       [histShards]Histogram
	joinHist   Histogram
	memberHist Histogram
	connHist   Histogram

	seqs     []seqRec
	seqLocal int64 // connections expected per seq (subscribers on the fanout channel)

	activity sync.WaitGroup // client-event senders and churners

	readersMu sync.Mutex
	readers   []*reader
}

// reader returns the epoll reader for connection i (GOMAXPROCS of them).
func (w *worker) reader(i int) (*reader, error) {
	w.readersMu.Lock()
	defer w.readersMu.Unlock()
	if w.readers == nil {
		for range runtime.GOMAXPROCS(0) {
			r, err := newReader(w)
			if err != nil {
				return nil, err
			}
			w.readers = append(w.readers, r)
		}
	}
	return w.readers[i%len(w.readers)], nil
}

// WorkerMain runs a load worker: commands as JSON lines on in, replies on out.
func WorkerMain(in io.Reader, out io.Writer) int {
	raiseNofile()
	if p := os.Getenv("HERALD_BENCH_WORKER_CPUPROFILE"); p != "" {
		// Profiling the load tool itself: one file per worker process.
		if f, err := os.Create(p + "." + strconv.Itoa(os.Getpid())); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	w := &worker{out: json.NewEncoder(out), channels: make(map[int]*chanStat)}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var cmd command
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			w.write(reply{Err: "bad command: " + err.Error()})
			continue
		}
		if cmd.Op == "quit" {
			w.shutdown()
			w.write(reply{ID: cmd.ID})
			return 0
		}
		go w.handle(cmd)
	}
	w.shutdown()
	return 0
}

func (w *worker) write(r reply) {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	_ = w.out.Encode(r)
}

func (w *worker) noteError(msg string) {
	if w.errs.Add(1) == 1 {
		w.firstErr.Store(&msg)
	}
}

func (w *worker) handle(cmd command) {
	r := reply{ID: cmd.ID}
	switch cmd.Op {
	case "connect":
		r = w.connect(cmd)
		r.ID = cmd.ID
	case "stats":
		r = w.stats(cmd.Full)
		r.ID = cmd.ID
	case "reset":
		w.reset()
	case "seqs":
		w.armSeqs(cmd.Seqs)
	case "client-events":
		w.clientEvents(cmd)
	case "churn":
		w.churn(cmd)
	case "wait":
		w.activity.Wait()
	case "close":
		w.closeAll()
	default:
		r.Err = "unknown op " + strconv.Quote(cmd.Op)
	}
	w.write(r)
}

func (w *worker) channel(i int) *chanStat {
	w.mu.Lock()
	defer w.mu.Unlock()
	cs := w.channels[i]
	if cs == nil {
		cs = &chanStat{i: i, name: w.spec.Prefix + strconv.Itoa(i)}
		w.channels[i] = cs
	}
	return cs
}

func (w *worker) connect(cmd command) reply {
	w.mu.Lock()
	w.target = cmd.Target
	if cmd.Channels.Count > 0 {
		w.spec = cmd.Channels
	}
	w.mu.Unlock()
	var srcs []net.IP
	for _, s := range cmd.Src {
		if ip := net.ParseIP(strings.TrimSpace(s)); ip != nil {
			srcs = append(srcs, ip)
		}
	}
	par := max(1, cmd.Parallel)
	timeout := cmd.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	path := "/app/" + cmd.Target.Key + "?protocol=7&client=herald-bench&version=1.0"
	start := time.Now()
	var failed atomic.Int64
	var firstErr atomic.Pointer[string]
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := w.open(cmd, i, srcs, path, timeout); err != nil {
					if failed.Add(1) == 1 {
						msg := err.Error()
						firstErr.Store(&msg)
					}
				}
			}
		}()
	}
	for i := cmd.First; i < cmd.First+cmd.Count; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	r := reply{Conns: w.connCount(), Failed: int(failed.Load()), Seconds: time.Since(start).Seconds()}
	if p := firstErr.Load(); p != nil {
		r.FirstError = *p
	}
	return r
}

func (w *worker) open(cmd command, i int, srcs []net.IP, path string, timeout time.Duration) error {
	c := &clientConn{w: w, idx: i, role: roleSubscriber, ready: make(chan error, 1), subDone: make(chan error, 1)}
	if cmd.Bare || cmd.Channels.Count == 0 {
		c.role = roleBare
	} else if cmd.ChurnFrom > 0 && i >= cmd.ChurnFrom {
		c.role = roleChurner
	}
	if cmd.Channels.Count > 0 {
		c.ch = w.channel(i % cmd.Channels.Count)
		c.channel = c.ch.name
	} else {
		c.ch = w.channel(-1)
	}
	var src net.IP
	if len(srcs) > 0 {
		src = srcs[i%len(srcs)]
	}
	c.started = time.Now()
	pending, err := c.dial(cmd.Target.Addr, path, src, timeout)
	if err != nil {
		return err
	}
	rd, err := w.reader(i)
	if err != nil {
		c.nc.Close()
		return err
	}
	if err := c.detach(); err != nil {
		c.nc.Close()
		return err
	}
	ready := c.ready
	// What came with the upgrade response is parsed before the reader can
	// see the socket, so one goroutine at a time handles the connection.
	c.consume(pending, time.Now().UnixNano())
	if err := rd.add(c); err != nil {
		c.close()
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err = <-ready:
	case <-t.C:
		err = errors.New("timed out waiting for connection_established / subscription_succeeded")
	}
	if err != nil {
		c.close()
		return err
	}
	w.connHist.Record(time.Since(c.started).Microseconds())
	if c.role == roleSubscriber {
		c.ch.subs.Add(1)
	}
	w.mu.Lock()
	w.conns = append(w.conns, c)
	w.mu.Unlock()
	return nil
}

func (w *worker) connCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.conns)
}

// subscribeFrame returns pusher:subscribe for channel, signed when it is
// private or presence. Presence members carry the time in user_info so
// observers can time member_added.
func (w *worker) subscribeFrame(c *clientConn, channel string, now time.Time) []byte {
	d := map[string]string{"channel": channel}
	switch {
	case strings.HasPrefix(channel, "presence-"):
		cd := `{"user_id":"u` + strconv.Itoa(c.idx) + `","user_info":{"b":"` + string(markT) + strconv.FormatInt(now.UnixNano(), 10) + `|"}}`
		d["channel_data"] = cd
		d["auth"] = w.target.Key + ":" + auth.Sign(w.target.Secret, auth.ChannelString(c.socketID, channel, cd))
	case strings.HasPrefix(channel, "private-"):
		d["auth"] = w.target.Key + ":" + auth.Sign(w.target.Secret, auth.ChannelString(c.socketID, channel, ""))
	}
	b, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": d})
	return b
}

func (w *worker) stats(full bool) reply {
	r := reply{Conns: w.connCount(), Recv: w.recvTotal(nil), Bytes: w.bytes.Load(),
		Dropped: w.dropped.Load(), Errors: w.errs.Load()}
	if p := w.firstErr.Load(); p != nil {
		r.FirstError = *p
	}
	w.mu.Lock()
	for _, cs := range w.channels {
		r.Sent += cs.sent.Load()
		r.Joins += cs.joins.Load()
		r.Leaves += cs.leaves.Load()
	}
	w.mu.Unlock()
	if !full {
		return r
	}
	var merged Histogram
	for i := range w.hist {
		for b := range w.hist[i].counts {
			if n := w.hist[i].counts[b].Load(); n > 0 {
				merged.counts[b].Add(n)
			}
		}
	}
	r.Hist = merged.Snapshot()
	r.JoinHist = w.joinHist.Snapshot()
	r.MemberHist = w.memberHist.Snapshot()
	r.ConnHist = w.connHist.Snapshot()
	perCh := map[*chanStat]int64{}
	r.Recv = w.recvTotal(perCh)
	w.mu.Lock()
	for _, cs := range w.channels {
		if cs.i < 0 {
			continue
		}
		r.PerChannel = append(r.PerChannel, chanJSON{I: cs.i, Subs: cs.subs.Load(), Recv: perCh[cs],
			Sent: cs.sent.Load(), Added: cs.added.Load(), Removed: cs.removed.Load(),
			Joins: cs.joins.Load(), Leaves: cs.leaves.Load()})
	}
	w.mu.Unlock()
	return r
}

// recvTotal sums the bench events the connections received, and per
// channel into perCh when it is not nil.
func (w *worker) recvTotal(perCh map[*chanStat]int64) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int64
	for _, c := range w.conns {
		v := c.recv.Load()
		n += v
		if perCh != nil && v != 0 {
			perCh[c.ch] += v
		}
	}
	return n
}

func (w *worker) reset() {
	w.mu.Lock()
	for _, c := range w.conns {
		c.recv.Store(0)
	}
	w.mu.Unlock()
	w.bytes.Store(0)
	for i := range w.hist {
		w.hist[i].Reset()
	}
	w.joinHist.Reset()
	w.memberHist.Reset()
	w.mu.Lock()
	for _, cs := range w.channels {
		cs.sent.Store(0)
		cs.added.Store(0)
		cs.removed.Store(0)
		cs.joins.Store(0)
		cs.leaves.Store(0)
	}
	w.mu.Unlock()
}

// armSeqs starts tracking broadcasts 0..n-1: when every local subscriber has
// one, the worker notifies the coordinator with the first and last arrival.
func (w *worker) armSeqs(n int) {
	w.mu.Lock()
	var local int64
	for _, cs := range w.channels {
		local += cs.subs.Load()
	}
	w.seqLocal = local
	w.seqs = make([]seqRec, n)
	w.mu.Unlock()
}

func (w *worker) seqArrived(s, now int64) {
	seqs := w.seqs
	if s < 0 || s >= int64(len(seqs)) {
		return
	}
	r := &seqs[s]
	r.first.CompareAndSwap(0, now)
	for {
		l := r.last.Load()
		if now <= l || r.last.CompareAndSwap(l, now) {
			break
		}
	}
	if r.n.Add(1) == w.seqLocal {
		w.write(reply{Event: "seq", Seq: s, First: r.first.Load(), Last: r.last.Load(), Recv: w.seqLocal})
	}
}

// clientEvents makes the first Senders connections of each channel send
// client events at Rate per second each, for Duration.
func (w *worker) clientEvents(cmd command) {
	var senders []*clientConn
	w.mu.Lock()
	for _, c := range w.conns {
		if c.role == roleSubscriber && c.ch.i >= 0 && w.spec.Count > 0 && c.idx/w.spec.Count < cmd.Senders {
			senders = append(senders, c)
		}
	}
	w.mu.Unlock()
	if len(senders) == 0 || cmd.Rate <= 0 {
		return
	}
	w.activity.Add(1)
	go func() {
		defer w.activity.Done()
		total := float64(len(senders)) * cmd.Rate
		start := time.Now()
		end := start.Add(cmd.Duration)
		var sent int64
		seq := int64(0)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for now := range tick.C {
			el := min(now.Sub(start), end.Sub(start))
			due := int64(el.Seconds()*total + 1e-9)
			for ; sent < due; sent++ {
				c := senders[sent%int64(len(senders))]
				msg := `{"event":"client-bench","channel":"` + c.channel + `","data":"` + benchData(time.Now(), seq, cmd.Size) + `"}`
				seq++
				if err := c.send([]byte(msg)); err != nil {
					w.noteError("client event: " + err.Error())
					continue
				}
				c.ch.sent.Add(1)
			}
			if !now.Before(end) {
				return
			}
		}
	}()
}

// churn makes every churner connection join its presence channel, wait for
// subscription_succeeded, leave, and start over, Rate cycles per second each
// (0: as fast as it goes), for Duration.
func (w *worker) churn(cmd command) {
	var churners []*clientConn
	w.mu.Lock()
	for _, c := range w.conns {
		if c.role == roleChurner {
			churners = append(churners, c)
		}
	}
	w.mu.Unlock()
	end := time.Now().Add(cmd.Duration)
	for _, c := range churners {
		w.activity.Add(1)
		go func() {
			defer w.activity.Done()
			var period time.Duration
			if cmd.Rate > 0 {
				period = time.Duration(float64(time.Second) / cmd.Rate)
			}
			// Spread the churners' phases.
			if period > 0 {
				time.Sleep(time.Duration(c.idx%97) * period / 97)
			}
			unsub, _ := json.Marshal(map[string]any{"event": "pusher:unsubscribe", "data": map[string]string{"channel": c.channel}})
			for time.Now().Before(end) {
				t0 := time.Now()
				select { // drop a stale signal
				case <-c.subDone:
				default:
				}
				if err := c.send(w.subscribeFrame(c, c.channel, t0)); err != nil {
					w.noteError("churn subscribe: " + err.Error())
					return
				}
				select {
				case err := <-c.subDone:
					if err != nil {
						w.noteError("churn subscribe: " + err.Error())
						return
					}
				case <-time.After(10 * time.Second):
					w.noteError("churn subscribe: no subscription_succeeded within 10s")
					return
				}
				w.joinHist.Record(time.Since(t0).Microseconds())
				c.ch.joins.Add(1)
				if period > 0 {
					time.Sleep(period / 2)
				}
				if err := c.send(unsub); err != nil {
					w.noteError("churn unsubscribe: " + err.Error())
					return
				}
				c.ch.leaves.Add(1)
				if period > 0 {
					if rest := period - time.Since(t0); rest > 0 {
						time.Sleep(rest)
					}
				}
			}
		}()
	}
}

func (w *worker) closeAll() {
	w.stopping.Store(true)
	w.mu.Lock()
	conns := w.conns
	w.conns = nil
	w.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	w.stopping.Store(false)
}

func (w *worker) shutdown() {
	w.stopping.Store(true)
	w.closeAll()
	w.readersMu.Lock()
	for _, r := range w.readers {
		r.close()
	}
	w.readers = nil
	w.readersMu.Unlock()
}

// workerProcess is the coordinator's handle on one worker.
type workerProcess struct {
	pid    int
	in     io.WriteCloser
	wait   func() error
	mu     sync.Mutex
	nextID int
	calls  map[int]chan reply
	events chan reply
	dead   chan struct{}
	errMsg atomic.Pointer[string]
}

func (p *workerProcess) readReplies(r io.Reader) {
	defer close(p.dead)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<20), 64<<20)
	for sc.Scan() {
		var rep reply
		if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
			msg := "bad reply: " + err.Error()
			p.errMsg.Store(&msg)
			continue
		}
		if rep.ID == 0 {
			select {
			case p.events <- rep:
			default:
			}
			continue
		}
		p.mu.Lock()
		ch := p.calls[rep.ID]
		delete(p.calls, rep.ID)
		p.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
}

// call sends cmd and waits for its reply.
func (p *workerProcess) call(cmd command) (reply, error) {
	p.mu.Lock()
	p.nextID++
	cmd.ID = p.nextID
	ch := make(chan reply, 1)
	p.calls[cmd.ID] = ch
	b, _ := json.Marshal(cmd)
	_, err := p.in.Write(append(b, '\n'))
	p.mu.Unlock()
	if err != nil {
		return reply{}, fmt.Errorf("worker %d: %w", p.pid, err)
	}
	select {
	case r := <-ch:
		if r.Err != "" {
			return r, errors.New(r.Err)
		}
		return r, nil
	case <-p.dead:
		return reply{}, fmt.Errorf("worker %d exited", p.pid)
	}
}

// startWorker starts exe as a worker process (exe bench worker).
func startWorker(exe string, events chan reply, stderr io.Writer) (*workerProcess, error) {
	cmd := newWorkerCmd(exe)
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &workerProcess{pid: cmd.Process.Pid, in: in, wait: cmd.Wait, calls: make(map[int]chan reply),
		events: events, dead: make(chan struct{})}
	go p.readReplies(out)
	return p, nil
}

func newWorkerCmd(exe string) *exec.Cmd {
	cmd := exec.Command(exe, "bench", "worker")
	cmd.Env = append(os.Environ(), WorkerEnv+"=1")
	return cmd
}
