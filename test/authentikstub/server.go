// Package authentikstub is an in-memory stand-in for the parts of Authentik's REST API the
// bridge uses, for end-to-end tests and the local sandbox. It keeps Authentik's semantics
// (pagination, wholesale PATCH, membership actions, bearer tokens) and checks every request it
// receives and every response it sends against the OpenAPI schemas of Authentik 2026.8 and
// 2026.2.2, recording each mismatch as a violation instead of silently drifting from the real API.
package authentikstub

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// apiPrefix is where Authentik serves its REST API (the schemas' server URL).
const apiPrefix = "/api/v3/"

// maxBody bounds request bodies; the bridge never sends more than a user's attributes.
const maxBody = 1 << 20

// maxViolations bounds memory when a load test keeps sending the same bad request.
const maxViolations = 1000

// Options configures a Server. The zero value is usable except for Token.
type Options struct {
	// Token is the bearer token the API accepts (an API-intent token in Authentik terms).
	Token string
	// Addr is the listen address; default "127.0.0.1:0".
	Addr string
	// NoValidate turns schema validation off (it is on by default). Meant for benchmarks and the
	// sandbox, where the schemas' load time and the per-request checks are unwanted.
	NoValidate bool
	// Seed makes generated UUIDs and the random failures of SetFailureRate repeatable; 0 picks 1.
	Seed uint64
	// ServiceAccount is the username of the token's owner, served by users/me/; default
	// "discord-bridge".
	ServiceAccount string
	// Logger receives state changes (listening, down, up) and violations; nil discards them.
	Logger *slog.Logger
}

// Counts is a snapshot of the API requests received since the start or the last ResetCounts.
// Every request under /api/v3/ counts, whatever its answer (refused, failed by a fault, invalid).
type Counts struct {
	Reads  int // GET and HEAD
	Writes int // POST, PUT, PATCH, DELETE
	Puts   int // PUT alone (also counted in Writes); the bridge must never PUT
	// ByRoute counts by method and schema path, e.g. "GET /api/v3/core/users/{id}/". A request
	// to a route the stub does not serve is keyed by its literal path.
	ByRoute map[string]int
}

// Server is a running stand-in. All methods are safe for concurrent use.
type Server struct {
	token    string
	validate bool
	log      *slog.Logger

	// life guards the listener and the http.Server, which SetDown replaces.
	life   sync.Mutex
	addr   string
	srv    *http.Server
	down   bool
	closed bool
	serve  sync.WaitGroup

	// stat guards counts, violations and faults.
	stat        sync.Mutex
	counts      Counts
	violations  []string
	dropped     int
	failNext    int
	failStatus  int
	failureRate float64
	faultRand   *rand.Rand
	latency     time.Duration
	// ignoreAttrFilter makes user lists drop the attributes filter, as Authentik does with a
	// filter it cannot evaluate.
	ignoreAttrFilter bool

	// mu guards the data below.
	mu        sync.Mutex
	idRand    *rand.Rand
	now       func() time.Time
	users     map[int32]*user
	usernames map[string]int32         // index of users by username
	attrIdx   map[string]*attrIndex    // indexes of users by attribute path, built when asked
	connOrder map[string][]*connection // s.conns by source slug ("" for all) in list order; nil when stale
	groups    map[string]*group
	sources   map[string]*source
	conns     map[int32]*connection
	sessions  map[string]*session
	access    map[int32]*grant
	refresh   map[int32]*grant
	nextUser  int32
	nextGroup int32
	nextConn  int32
	nextGrant int32
	selfPK    int32

	// oidc is the OpenID provider of oidc.go; its maps are guarded by mu as well.
	oidc oidcState
}

// New loads the schemas (once per process) unless validation is off, and starts listening.
func New(opts Options) (*Server, error) {
	if opts.Token == "" {
		return nil, errors.New("authentikstub: options need a token")
	}
	if !opts.NoValidate {
		if err := loadSchemas(); err != nil {
			return nil, fmt.Errorf("authentikstub: %w", err)
		}
	}
	seed := opts.Seed
	if seed == 0 {
		seed = 1
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	s := &Server{
		token:     opts.Token,
		validate:  !opts.NoValidate,
		log:       logger,
		counts:    Counts{ByRoute: map[string]int{}},
		faultRand: rand.New(rand.NewPCG(seed, 0x6661756c74)),
		idRand:    rand.New(rand.NewPCG(seed, 0x6964)),
		now:       time.Now,
		users:     map[int32]*user{},
		attrIdx:   map[string]*attrIndex{},
		usernames: map[string]int32{},
		groups:    map[string]*group{},
		sources:   map[string]*source{},
		conns:     map[int32]*connection{},
		sessions:  map[string]*session{},
		access:    map[int32]*grant{},
		refresh:   map[int32]*grant{},
		nextUser:  firstUserPK,
		nextGroup: firstGroupPK,
		nextConn:  firstConnPK,
		nextGrant: firstGrantPK,
	}
	s.selfPK = s.addServiceAccount(cmp.Or(opts.ServiceAccount, "discord-bridge"))

	ln, err := net.Listen("tcp", cmp.Or(opts.Addr, "127.0.0.1:0"))
	if err != nil {
		return nil, fmt.Errorf("authentikstub: listen: %w", err)
	}
	s.addr = ln.Addr().String()
	s.startServing(ln)
	s.log.Info("authentik stub listening", "addr", s.addr, "validate", s.validate)
	return s, nil
}

// URL is the base URL without /api/v3, e.g. http://127.0.0.1:41234. It stays the same across
// SetDown.
func (s *Server) URL() string {
	return "http://" + s.addr
}

// Close stops the server and closes every connection.
func (s *Server) Close() error {
	s.life.Lock()
	defer s.life.Unlock()

	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if !s.down {
		err = s.srv.Close()
	}
	s.serve.Wait()
	return err
}

// SetDown(true) closes the listener and every open connection, so that clients get "connection
// refused"; SetDown(false) listens again on the same address. It fails only when the port was
// taken in between or the server is closed.
func (s *Server) SetDown(down bool) error {
	s.life.Lock()
	defer s.life.Unlock()

	if s.closed {
		return errors.New("authentikstub: server is closed")
	}
	if down == s.down {
		return nil
	}
	if down {
		s.down = true
		err := s.srv.Close()
		s.serve.Wait()
		s.log.Info("authentik stub down", "addr", s.addr)
		return err
	}

	// Go's listeners set SO_REUSEADDR, so the port is free again even with connections of the
	// previous listener still in TIME_WAIT.
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("authentikstub: listen again on %s: %w", s.addr, err)
	}
	s.down = false
	s.startServing(ln)
	s.log.Info("authentik stub up", "addr", s.addr)
	return nil
}

// startServing runs a fresh http.Server on ln: a closed http.Server cannot be started again.
// Caller holds s.life.
func (s *Server) startServing(ln net.Listener) {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.srv = srv
	s.serve.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("authentik stub serve", "err", err)
		}
	})
}

// FailNext makes the next n API requests fail with status: an HTML error page for 5xx (as
// Authentik's web server or a proxy in front of it answers) and a JSON detail otherwise.
func (s *Server) FailNext(n int, status int) {
	s.stat.Lock()
	defer s.stat.Unlock()
	s.failNext, s.failStatus = n, status
}

// SetFailureRate makes each API request fail with 500 with probability p (0 turns it off). The
// sequence is repeatable for a given Options.Seed and request order.
func (s *Server) SetFailureRate(p float64) {
	s.stat.Lock()
	defer s.stat.Unlock()
	s.failureRate = p
}

// SetLatency delays every API answer by d (0 turns it off), to make a slow Authentik that a
// test can interrupt in the middle of its work.
func (s *Server) SetLatency(d time.Duration) {
	s.stat.Lock()
	defer s.stat.Unlock()
	s.latency = d
}

// SetIgnoreAttributeFilter makes the user list answer as if no attributes filter had been
// given, which is what Authentik does when evaluating the filter raises a ValueError.
func (s *Server) SetIgnoreAttributeFilter(ignore bool) {
	s.stat.Lock()
	defer s.stat.Unlock()
	s.ignoreAttrFilter = ignore
}

// Counts returns a snapshot of the request counters.
func (s *Server) Counts() Counts {
	s.stat.Lock()
	defer s.stat.Unlock()
	c := s.counts
	c.ByRoute = maps.Clone(s.counts.ByRoute)
	return c
}

// ResetCounts zeroes the request counters.
func (s *Server) ResetCounts() {
	s.stat.Lock()
	defer s.stat.Unlock()
	s.counts = Counts{ByRoute: map[string]int{}}
}

// Violations returns every schema violation and misuse recorded so far, oldest first; each names
// the method, path, schema release and error. Tests fail when it is not empty.
func (s *Server) Violations() []string {
	s.stat.Lock()
	defer s.stat.Unlock()
	out := append([]string(nil), s.violations...)
	if s.dropped > 0 {
		out = append(out, fmt.Sprintf("... and %d more violations", s.dropped))
	}
	return out
}

// ResetViolations forgets the recorded violations, for tests that provoke one on purpose.
func (s *Server) ResetViolations() {
	s.stat.Lock()
	defer s.stat.Unlock()
	s.violations, s.dropped = nil, 0
}

func (s *Server) violation(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.log.Warn("authentik stub violation", "violation", msg)

	s.stat.Lock()
	defer s.stat.Unlock()
	if len(s.violations) >= maxViolations {
		s.dropped++
		return
	}
	s.violations = append(s.violations, msg)
}

// count records a request and decides whether a fault answers it instead.
func (s *Server) count(method, key string) (faultStatus int) {
	s.stat.Lock()
	defer s.stat.Unlock()

	switch method {
	case http.MethodGet, http.MethodHead:
		s.counts.Reads++
	default:
		s.counts.Writes++
	}
	if method == http.MethodPut {
		s.counts.Puts++
	}
	s.counts.ByRoute[method+" "+key]++

	if s.failNext > 0 {
		s.failNext--
		return s.failStatus
	}
	if s.failureRate > 0 && s.faultRand.Float64() < s.failureRate {
		return http.StatusInternalServerError
	}
	return 0
}

// reply is what a handler answers: a status and a value to encode as JSON (nil: no body).
type reply struct {
	status int
	body   any
}

func detail(status int, msg string) reply {
	return reply{status, map[string]string{"detail": msg}}
}

func fieldError(field, msg string) reply {
	return reply{http.StatusBadRequest, map[string][]string{field: {msg}}}
}

// ServeHTTP runs every API request through the same steps as Authentik (routing, faults,
// authentication, validation, the view) and validates whatever is answered. Paths under
// /application/o/ belong to the OpenID provider of oidc.go instead.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, oidcPrefix) {
		s.serveOIDC(w, r)
		return
	}
	if !strings.HasPrefix(r.URL.Path, apiPrefix) {
		writeJSON(w, detail(http.StatusNotFound, "Not found."))
		return
	}
	rt, params, pathKnown := match(r.Method, r.URL.Path)
	key := r.URL.Path
	if rt != nil {
		key = rt.template
	}
	s.stat.Lock()
	delay := s.latency
	s.stat.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	if status := s.count(r.Method, key); status != 0 {
		writeFault(w, status)
		return
	}

	if rt == nil {
		s.unserved(r)
		if pathKnown {
			writeJSON(w, detail(http.StatusMethodNotAllowed,
				fmt.Sprintf("Method \"%s\" not allowed.", r.Method)))
			return
		}
		writeJSON(w, detail(http.StatusNotFound, "Not found."))
		return
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeJSON(w, detail(http.StatusRequestEntityTooLarge, "Request body too large."))
		return
	}

	var checks []schemaCheck
	if s.validate {
		checks = checkRequest(r, body, rt, params)
	}
	var rep reply
	if msg, ok := s.authenticate(r); !ok {
		rep = detail(http.StatusForbidden, msg)
	} else if bad := s.requestViolations(r, checks); bad != nil {
		rep = reply{http.StatusBadRequest, validationBody(bad)}
	} else {
		rep = rt.handle(s, &call{r: r, params: params, query: r.URL.Query(), body: body})
	}
	s.respond(w, r, checks, rep)
}

// authenticate applies Authentik's bearer rules: no header (or one without a credential) is
// "not provided", another scheme is unsupported, an unknown key is invalid. Authentik answers
// all of them with 403 because its authenticator sends no WWW-Authenticate challenge.
func (s *Server) authenticate(r *http.Request) (string, bool) {
	header := strings.TrimSpace(r.Header.Get("Authorization"))
	scheme, cred, found := strings.Cut(header, " ")
	switch {
	case header == "" || !found:
		return "Authentication credentials were not provided.", false
	case !strings.EqualFold(scheme, "bearer"):
		return "Unsupported authentication type", false
	case strings.TrimSpace(cred) == "":
		return "Malformed header", false
	case strings.TrimSpace(cred) != s.token:
		return "Token invalid/expired", false
	}
	return "", true
}

// requestViolations records every schema the request fails and returns the first error.
func (s *Server) requestViolations(r *http.Request, checks []schemaCheck) error {
	var first error
	for _, chk := range checks {
		if chk.err == nil {
			continue
		}
		s.violation("%s %s: schema %s: request: %v", r.Method, r.URL.RequestURI(),
			chk.schema.release, chk.err)
		if first == nil {
			first = chk.err
		}
	}
	return first
}

// unserved records a request for a route the stub does not serve, saying whether Authentik has
// it (a gap in the stub) or not (a bug in the caller).
func (s *Server) unserved(r *http.Request) {
	if !s.validate {
		s.violation("%s %s: not served by the stub", r.Method, r.URL.RequestURI())
		return
	}
	for _, chk := range checkRequest(r, nil, nil, nil) {
		where := "exists in the schema but is not served by the stub"
		if chk.input == nil {
			where = "is not an operation of the schema"
		}
		s.violation("%s %s: schema %s: %s", r.Method, r.URL.RequestURI(), chk.schema.release,
			where)
	}
}

// respond encodes rep, validates it against every schema the request matched, and sends it.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, checks []schemaCheck, rep reply) {
	header := http.Header{}
	var body []byte
	if rep.body != nil {
		header.Set("Content-Type", "application/json")
		body = encodeJSON(rep.body)
	}

	for _, chk := range checks {
		if err := checkResponse(chk, rep.status, header, body); err != nil {
			s.violation("%s %s: schema %s: response %d: %v", r.Method, r.URL.RequestURI(),
				chk.schema.release, rep.status, err)
		}
	}

	for k, v := range header {
		w.Header()[k] = v
	}
	w.WriteHeader(rep.status)
	_, _ = w.Write(body)
}

// encodeJSON marshals like Django REST framework's renderer: no HTML escaping, so raw attribute
// bytes go out as stored.
func encodeJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Views are built from types that always encode; reaching this is a bug in the stub.
		return fmt.Appendf(nil, `{"detail":%q}`, "stub encode: "+err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func writeJSON(w http.ResponseWriter, rep reply) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.status)
	_, _ = w.Write(encodeJSON(rep.body))
}

// writeFault answers an injected failure.
func writeFault(w http.ResponseWriter, status int) {
	if status >= 500 {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, "<!doctype html>\n<html lang=\"en\"><head><title>Server Error (%d)"+
			"</title></head><body><h1>Server Error (%d)</h1><p>%s</p></body></html>\n",
			status, status, http.StatusText(status))
		return
	}
	writeJSON(w, detail(status, http.StatusText(status)))
}

// call carries one request to a handler.
type call struct {
	r      *http.Request
	params map[string]string
	query  url.Values
	body   []byte
}
