package discord

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
)

// EventKind names what happened in the guild.
type EventKind string

// The events a Gateway hands on.
const (
	EventMemberAdd    EventKind = "member_add"
	EventMemberUpdate EventKind = "member_update"
	EventMemberRemove EventKind = "member_remove"
	EventRoleUpdate   EventKind = "role_update"
	EventRoleDelete   EventKind = "role_delete"

	// EventReady starts a new session: events may have been lost before it, so the caller
	// runs a full reconciliation.
	EventReady EventKind = "ready"

	// EventResumed continues a session: Discord has replayed what was missed.
	EventResumed EventKind = "resumed"
)

// Event is one gateway event of the configured guild.
type Event struct {
	Kind    EventKind
	GuildID string
	UserID  string            // member events
	Member  *discordgo.Member // member_add and member_update; nil for member_remove
	RoleID  string            // role events
	Role    *discordgo.Role   // role_update
	At      time.Time         // when the bridge received it
}

// GatewayState says what the session is doing.
type GatewayState string

// The states of a Gateway. Ready and resumed both mean events are flowing.
const (
	GatewayConnecting    GatewayState = "connecting"
	GatewayReady         GatewayState = "ready"
	GatewayResumed       GatewayState = "resumed"
	GatewayDisconnected  GatewayState = "disconnected" // waiting to reconnect
	GatewayIntentRefused GatewayState = "intent_refused"
	GatewayAuthFailed    GatewayState = "auth_failed"
	GatewayStopped       GatewayState = "stopped"
)

// GatewayStatus is a snapshot for the status page and readiness checks.
type GatewayStatus struct {
	State       GatewayState
	Reason      string    // why the state is what it is, for people; empty when all is well
	LastEvent   time.Time // last event handed to Handle
	LastReady   time.Time // last READY
	Sessions    int       // READYs seen, i.e. sessions started
	Resumes     int       // RESUMEDs seen
	Disconnects int       // established connections lost
}

// GatewayOptions configure a Gateway.
type GatewayOptions struct {
	Token   string // bot token, with or without the "Bot " prefix
	GuildID string // only this guild's events are handed on

	// APIURL is the REST base the gateway URL is asked from; DefaultAPIURL when empty. See
	// SetDiscordgoEndpoints for why it is process-global.
	APIURL string

	Logger *slog.Logger // discards when nil

	// Handle receives the events one at a time, in the order Discord sent them, on the
	// session's reading goroutine: it must return quickly (enqueue, do not sync). "ready"
	// arrives while discordgo is still connecting, with the endpoint lock held, so Handle
	// must not call SetDiscordgoEndpoints.
	Handle func(Event)
}

var (
	// ErrIntentRefused reports that Discord closed the session with 4014: the bot asks for
	// the Server Members intent, which is not switched on in the developer portal.
	ErrIntentRefused = errors.New("server members intent not enabled")

	// ErrAuthFailed reports that Discord refused the bot token (close code 4004).
	ErrAuthFailed = errors.New("bot token refused")
)

// membersSwitch is where the developer portal keeps the switch close code 4014 is about.
const membersSwitch = "Bot → Privileged Gateway Intents → Server Members Intent"

// Discord's gateway close codes after which reconnecting cannot help.
const (
	closeAuthFailed        = 4004
	closeInvalidShard      = 4010
	closeShardingRequired  = 4011
	closeInvalidAPIVersion = 4012
	closeInvalidIntents    = 4013
	closeDisallowedIntents = 4014
)

const (
	gatewayIntents = discordgo.IntentGuilds | discordgo.IntentGuildMembers

	minBackoff = time.Second
	maxBackoff = 2 * time.Minute

	// stableAfter is how long a connection must last for the back-off to start over.
	stableAfter = time.Minute

	// openTimeout bounds one connection attempt: asking for the URL, the websocket
	// handshake, HELLO and READY. discordgo itself waits for HELLO and READY forever.
	openTimeout = 30 * time.Second
	dialTimeout = 20 * time.Second
)

// Gateway keeps one gateway session for the guild and hands its member and role events on.
//
// It wraps a discordgo session with reconnecting turned off: discordgo retries forever on
// every error, a refused intent included. Run reconnects instead, with capped exponential
// back-off, and stops on close codes that no retry can fix. discordgo resumes on its own
// whenever it has a session ID and sequence number.
type Gateway struct {
	guildID string
	apiURL  string
	log     *slog.Logger
	handle  func(Event)
	s       *discordgo.Session
	running atomic.Bool

	mu      sync.Mutex
	st      GatewayStatus
	cur     *sniffConn      // the connection of the current or last attempt
	openCtx context.Context // bounds the attempt in progress; nil between attempts
}

// NewGateway checks the options and prepares a session. It makes no network call.
func NewGateway(o GatewayOptions) (*Gateway, error) {
	fields := strings.Fields(o.Token)
	if len(fields) > 0 && fields[0] == "Bot" {
		fields = fields[1:]
	}
	if len(fields) != 1 {
		return nil, errors.New("discord gateway: bot token is empty or has spaces")
	}
	if !validSnowflake(o.GuildID) {
		return nil, fmt.Errorf("discord gateway: guild id %q is not a snowflake", o.GuildID)
	}
	if o.Handle == nil {
		return nil, errors.New("discord gateway: no event handler")
	}
	apiURL, err := apiBase(o.APIURL)
	if err != nil {
		return nil, fmt.Errorf("discord gateway: %w", err)
	}

	s, err := discordgo.New("Bot " + fields[0])
	if err != nil {
		return nil, fmt.Errorf("discord gateway: new session: %w", err)
	}
	g := &Gateway{
		guildID: o.GuildID,
		apiURL:  apiURL,
		log:     o.Logger,
		handle:  o.Handle,
		s:       s,
		st:      GatewayStatus{State: GatewayStopped, Reason: "not started"},
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}

	// Without GUILD_MEMBERS no member event ever arrives; discordgo's default leaves it out.
	s.Identify.Intents = gatewayIntents
	// Handlers run one after the other on the reading goroutine, so events stay in order.
	s.SyncEvents = true
	s.ShouldReconnectOnError = false
	s.ShouldReconnectVoiceOnSessionError = false
	// discordgo's member cache would grow with every member who ever sent an event.
	s.StateEnabled = false
	// Plain text frames; discordgo copies this into Identify.Compress.
	s.Compress = false
	// The only REST call of this session is GET /gateway; Run retries it with back-off.
	s.ShouldRetryOnRateLimit = false
	s.MaxRestRetries = 0
	s.UserAgent = defaultUserAgent
	// discordgo would print through the standard logger; what matters is reported by Run.
	s.LogLevel = -1
	s.Client = &http.Client{
		Timeout:   dialTimeout,
		Transport: &attemptTransport{g: g, next: http.DefaultTransport},
	}
	s.Dialer = &websocket.Dialer{
		Proxy:             http.ProxyFromEnvironment,
		HandshakeTimeout:  dialTimeout,
		NetDialContext:    g.dial,
		NetDialTLSContext: g.dialTLS,
	}

	s.AddHandler(g.onReady)
	s.AddHandler(g.onResumed)
	s.AddHandler(func(_ *discordgo.Session, e *discordgo.GuildMemberAdd) {
		g.onMember(EventMemberAdd, e.Member)
	})
	s.AddHandler(func(_ *discordgo.Session, e *discordgo.GuildMemberUpdate) {
		g.onMember(EventMemberUpdate, e.Member)
	})
	s.AddHandler(func(_ *discordgo.Session, e *discordgo.GuildMemberRemove) {
		g.onMember(EventMemberRemove, e.Member)
	})
	s.AddHandler(g.onRoleUpdate)
	s.AddHandler(g.onRoleDelete)
	return g, nil
}

// Status returns a snapshot of the session's state.
func (g *Gateway) Status() GatewayStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.st
}

// Run connects and keeps the session until ctx ends, then closes it and returns nil (about a
// second later: discordgo waits that long after its close frame). It returns early with an
// error wrapping ErrIntentRefused or ErrAuthFailed, or another error for a close code that no
// retry can fix. Run may be called once.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.running.CompareAndSwap(false, true) {
		return errors.New("discord gateway: run called twice")
	}

	failures := 0
	for ctx.Err() == nil {
		g.setState(GatewayConnecting, "")
		conn, err := g.open(ctx)
		if ctx.Err() != nil {
			break
		}

		var code int
		if err == nil {
			up := time.Now()
			select {
			case <-ctx.Done():
				continue
			case <-conn.closed:
			}
			if time.Since(up) >= stableAfter {
				failures = 0
			}
			code = conn.closeCode()
		} else {
			code = closeCodeOf(err, conn)
		}
		if fatal := g.fatal(code); fatal != nil {
			return fatal
		}

		failures++
		wait := backoff(failures)
		reason := "connection lost"
		if code != 0 {
			reason = fmt.Sprintf("discord closed the connection with code %d", code)
		}
		if err != nil {
			reason = "connecting failed: " + err.Error()
			g.log.Warn("discord gateway connect failed",
				"close_code", code, "retry_in", wait, "err", err)
		} else {
			g.log.Warn("discord gateway disconnected", "close_code", code, "retry_in", wait)
		}

		g.mu.Lock()
		g.st.State, g.st.Reason = GatewayDisconnected, reason
		if err == nil {
			g.st.Disconnects++
		}
		g.mu.Unlock()
		if !sleep(ctx, wait) {
			break
		}
	}

	g.closeSession()
	g.setState(GatewayStopped, "stopped by the bridge")
	g.log.Info("discord gateway stopped")
	return nil
}

// open makes one connection attempt: discordgo's Open, bounded by openTimeout and ctx.
func (g *Gateway) open(ctx context.Context) (*sniffConn, error) {
	actx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()

	g.mu.Lock()
	g.cur, g.openCtx = nil, actx
	g.mu.Unlock()

	// discordgo reads HELLO and READY without a deadline; closing the socket ends the wait.
	stop := context.AfterFunc(actx, func() {
		g.mu.Lock()
		c := g.cur
		g.mu.Unlock()
		if c != nil {
			_ = c.Close()
		}
	})
	err := g.openSession()
	stop()

	g.mu.Lock()
	conn := g.cur
	g.openCtx = nil
	g.mu.Unlock()
	if err == nil && conn == nil {
		// Cannot happen while every dial goes through g.dial or g.dialTLS.
		g.closeSession()
		err = errors.New("connected without a known socket")
	}
	return conn, err
}

// openSession calls discordgo's Open with its endpoints pointed at this gateway's API.
func (g *Gateway) openSession() (err error) {
	endpointMu.Lock()
	defer endpointMu.Unlock()
	setEndpointsLocked(g.apiURL)

	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("discordgo panicked while connecting: %v", p)
		}
	}()
	return g.s.Open()
}

// closeSession closes discordgo's session, which sends a normal close frame. discordgo
// then waits a second before it drops the socket.
func (g *Gateway) closeSession() {
	defer func() {
		if p := recover(); p != nil {
			g.log.Error("discordgo panicked while closing", "panic", fmt.Sprint(p))
		}
	}()
	_ = g.s.Close()
}

// fatal turns a close code after which reconnecting cannot help into Run's error.
func (g *Gateway) fatal(code int) error {
	var (
		state  = GatewayStopped
		reason string
		err    error
	)
	switch code {
	case closeDisallowedIntents:
		state = GatewayIntentRefused
		reason = "Discord refused the Server Members intent (close code 4014): turn on " +
			membersSwitch + " in the Discord developer portal, then restart the bridge"
		err = fmt.Errorf("discord gateway: %w: turn on %s in the developer portal",
			ErrIntentRefused, membersSwitch)
	case closeAuthFailed:
		state = GatewayAuthFailed
		reason = "Discord refused the bot token (close code 4004): check the token"
		err = fmt.Errorf("discord gateway: %w (close code 4004)", ErrAuthFailed)
	case closeInvalidShard, closeShardingRequired, closeInvalidAPIVersion, closeInvalidIntents:
		reason = fmt.Sprintf("Discord ended the session with close code %d", code)
		err = fmt.Errorf("discord gateway: closed with code %d, not retrying", code)
	default:
		return nil
	}

	g.setState(state, reason)
	g.log.Error("discord gateway stopped", "close_code", code, "reason", reason)
	return err
}

func (g *Gateway) setState(state GatewayState, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.st.State, g.st.Reason = state, reason
}

func (g *Gateway) onReady(_ *discordgo.Session, r *discordgo.Ready) {
	defer g.recoverHandler("READY")
	now := time.Now()

	inGuild := false
	for _, gd := range r.Guilds {
		inGuild = inGuild || (gd != nil && gd.ID == g.guildID)
	}
	reason := ""
	if !inGuild {
		reason = "the bot is not a member of guild " + g.guildID
	}

	g.mu.Lock()
	g.st.State, g.st.Reason = GatewayReady, reason
	g.st.LastReady = now
	g.st.Sessions++
	sessions := g.st.Sessions
	g.mu.Unlock()

	g.log.Info("discord gateway session ready", "sessions", sessions)
	if !inGuild {
		g.log.Warn("discord gateway: the bot is not a member of the guild",
			"guild_id", g.guildID)
	}
	g.deliver(Event{Kind: EventReady, GuildID: g.guildID, At: now})
}

func (g *Gateway) onResumed(_ *discordgo.Session, _ *discordgo.Resumed) {
	defer g.recoverHandler("RESUMED")
	now := time.Now()

	g.mu.Lock()
	g.st.State, g.st.Reason = GatewayResumed, ""
	g.st.Resumes++
	g.mu.Unlock()

	g.log.Info("discord gateway session resumed")
	g.deliver(Event{Kind: EventResumed, GuildID: g.guildID, At: now})
}

func (g *Gateway) onMember(kind EventKind, m *discordgo.Member) {
	defer g.recoverHandler(string(kind))
	if m == nil || m.User == nil || m.User.ID == "" {
		g.log.Warn("discord gateway: member event without user, ignored", "kind", kind)
		return
	}
	if m.GuildID != g.guildID {
		return
	}

	e := Event{Kind: kind, GuildID: m.GuildID, UserID: m.User.ID, Member: m, At: time.Now()}
	if kind == EventMemberRemove {
		e.Member = nil
	}
	g.deliver(e)
}

func (g *Gateway) onRoleUpdate(_ *discordgo.Session, e *discordgo.GuildRoleUpdate) {
	defer g.recoverHandler("GUILD_ROLE_UPDATE")
	if e.GuildRole == nil || e.Role == nil || e.Role.ID == "" {
		g.log.Warn("discord gateway: role update without role, ignored")
		return
	}
	if e.GuildID != g.guildID {
		return
	}
	g.deliver(Event{
		Kind: EventRoleUpdate, GuildID: e.GuildID, RoleID: e.Role.ID, Role: e.Role, At: time.Now(),
	})
}

func (g *Gateway) onRoleDelete(_ *discordgo.Session, e *discordgo.GuildRoleDelete) {
	defer g.recoverHandler("GUILD_ROLE_DELETE")
	if e.GuildID != g.guildID || e.RoleID == "" {
		return
	}
	g.deliver(Event{Kind: EventRoleDelete, GuildID: e.GuildID, RoleID: e.RoleID, At: time.Now()})
}

// deliver hands an event to the caller. A panic there is logged and the session goes on.
func (g *Gateway) deliver(e Event) {
	g.mu.Lock()
	g.st.LastEvent = e.At
	g.mu.Unlock()

	defer g.recoverHandler(string(e.Kind))
	g.handle(e)
}

// recoverHandler keeps a panic in an event handler from ending the process: with SyncEvents
// the handlers run on discordgo's reading goroutine, where nothing else would recover it.
func (g *Gateway) recoverHandler(event string) {
	if p := recover(); p != nil {
		g.log.Error("discord gateway event handler panicked", "event", event,
			"panic", fmt.Sprint(p))
	}
}

// dial opens the TCP connection for a ws:// gateway, or to a proxy.
func (g *Gateway) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, done := g.attemptContext(ctx)
	defer done()
	d := &net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return g.track(c)
}

// dialTLS opens the TLS connection for a wss:// gateway, or to an https proxy. It does what
// the websocket library would do itself, so that the connection can be watched in plain text.
func (g *Gateway) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ctx, done := g.attemptContext(ctx)
	defer done()
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: dialTimeout},
		Config:    &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12},
	}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return g.track(c)
}

// track wraps a fresh connection so that its close code can be read, and makes it the one
// the current attempt watches.
func (g *Gateway) track(c net.Conn) (net.Conn, error) {
	sc := &sniffConn{Conn: c, closed: make(chan struct{})}
	g.mu.Lock()
	g.cur = sc
	actx := g.openCtx
	g.mu.Unlock()
	if actx != nil && actx.Err() != nil {
		_ = sc.Close()
		return nil, context.Cause(actx)
	}
	return sc, nil
}

// attemptContext ends ctx also when the current connection attempt is given up. discordgo
// dials and asks for the gateway URL without a context of ours.
func (g *Gateway) attemptContext(ctx context.Context) (context.Context, func()) {
	g.mu.Lock()
	actx := g.openCtx
	g.mu.Unlock()
	if actx == nil {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(actx, cancel)
	return ctx, func() { stop(); cancel() }
}

// attemptTransport ties discordgo's GET /gateway to the current connection attempt.
type attemptTransport struct {
	g    *Gateway
	next http.RoundTripper
}

func (t *attemptTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.g.mu.Lock()
	actx := t.g.openCtx
	t.g.mu.Unlock()
	if actx != nil {
		// Not cancelled when RoundTrip returns, since discordgo still reads the body; the
		// attempt's context ends soon after and releases it.
		ctx, cancel := context.WithCancel(req.Context())
		context.AfterFunc(actx, cancel)
		req = req.WithContext(ctx)
	}
	return t.next.RoundTrip(req)
}

// closeCodeOf finds the close code of a failed attempt: Discord's refusals (4004, 4014)
// answer IDENTIFY, so discordgo's Open usually returns them as a *websocket.CloseError; the
// socket's own record also covers a close that discordgo read elsewhere. A 401 when asking
// for the gateway URL is a refused token too.
func closeCodeOf(err error, c *sniffConn) int {
	if c != nil {
		if code := c.closeCode(); code != 0 {
			return code
		}
	}
	if ce, ok := errors.AsType[*websocket.CloseError](err); ok {
		return ce.Code
	}
	if re, ok := errors.AsType[*discordgo.RESTError](err); ok && re.Response != nil &&
		re.Response.StatusCode == http.StatusUnauthorized {
		return closeAuthFailed
	}
	return 0
}

// backoff is the wait before attempt n+1 after n failures in a row: doubling from
// minBackoff up to maxBackoff, each between half and all of that.
func backoff(n int) time.Duration {
	d := maxBackoff
	if n < 20 {
		d = min(minBackoff<<(n-1), maxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d and reports whether ctx is still going.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// endpointMu guards discordgo's package-level Endpoint* variables. They are process-global:
// one process talks to one Discord. discordgo reads them only in its REST helpers, of which
// the bridge calls one, GET /gateway inside Session.Open; the Gateway sets them and calls
// Open under this lock, so gateways pointed at different stand-ins in one test binary do not
// race. The REST Client builds its URLs itself and never reads them.
var endpointMu sync.Mutex

// SetDiscordgoEndpoints points discordgo's REST endpoint variables at apiURL, e.g.
// http://127.0.0.1:PORT/api/v10; "" means DefaultAPIURL. The CDN variables stay as they
// are: the bridge fetches avatars with its own client. A Gateway calls this itself.
func SetDiscordgoEndpoints(apiURL string) error {
	base, err := apiBase(apiURL)
	if err != nil {
		return err
	}
	endpointMu.Lock()
	defer endpointMu.Unlock()
	setEndpointsLocked(base)
	return nil
}

// setEndpointsLocked sets every variable discordgo derives from EndpointAPI at init; the
// function-valued ones read EndpointAPI, EndpointGuilds and the like when called.
func setEndpointsLocked(base string) {
	api := base + "/"
	discordgo.EndpointAPI = api
	discordgo.EndpointGuilds = api + "guilds/"
	discordgo.EndpointChannels = api + "channels/"
	discordgo.EndpointUsers = api + "users/"
	discordgo.EndpointGateway = api + "gateway"
	discordgo.EndpointGatewayBot = discordgo.EndpointGateway + "/bot"
	discordgo.EndpointWebhooks = api + "webhooks/"
	discordgo.EndpointStickers = api + "stickers/"
	discordgo.EndpointStageInstances = api + "stage-instances"
	discordgo.EndpointVoice = api + "voice/"
	discordgo.EndpointVoiceRegions = discordgo.EndpointVoice + "regions"
	discordgo.EndpointNitroStickersPacks = api + "sticker-packs"
	discordgo.EndpointGuildCreate = api + "guilds"
	discordgo.EndpointApplications = api + "applications"
	discordgo.EndpointOAuth2 = api + "oauth2/"
}

// apiBase checks a REST base URL and returns it without a trailing slash.
func apiBase(raw string) (string, error) {
	if raw == "" {
		raw = DefaultAPIURL
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("api url %q is not an http(s) url", raw)
	}
	return strings.TrimRight(raw, "/"), nil
}

// sniffConn is the gateway's connection as the websocket library reads it. discordgo never
// hands a close code to its caller when it reads the close frame while listening, and
// answers 4014 with endless reconnects; watching the bytes for the close frame works
// wherever discordgo happens to read it and needs no process-global hook.
type sniffConn struct {
	net.Conn
	closed chan struct{} // closed by Close, which discordgo calls on every disconnect
	once   sync.Once

	mu sync.Mutex
	p  closeSniffer
}

func (c *sniffConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		c.p.feed(b[:n])
		c.mu.Unlock()
	}
	return n, err
}

func (c *sniffConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// closeCode is the status code of the first close frame received, 0 if none was seen.
func (c *sniffConn) closeCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.p.code
}

const (
	sniffAnswer  = iota // the HTTP answer to the upgrade request
	sniffHeader         // a frame header
	sniffPayload        // a frame's payload
	sniffOff            // not a plain websocket stream: a proxy's CONNECT answer, or garbled
)

// upgraded is how the answer that switches to the websocket protocol starts.
const upgraded = "HTTP/1.1 101"

// closeSniffer follows the websocket frames of a byte stream (RFC 6455, section 5.2) and
// records the status code of the first close frame. On anything it does not expect it stops
// looking, so it may miss a code but never makes one up. It never changes the bytes.
type closeSniffer struct {
	phase   int
	seen    int    // bytes of the HTTP answer so far
	tail    uint32 // its last four bytes, to find the blank line that ends it
	hdr     [14]byte
	hn      int
	left    uint64 // payload bytes of the current frame still to come
	pos     int    // payload bytes of the current close frame seen
	isClose bool
	masked  bool
	key     [4]byte
	status  [2]byte
	code    int
}

func (p *closeSniffer) feed(b []byte) {
	for len(b) > 0 {
		switch p.phase {
		case sniffAnswer:
			b = p.answer(b)
		case sniffHeader:
			b = p.header(b)
		case sniffPayload:
			b = p.payload(b)
		default:
			return
		}
	}
}

func (p *closeSniffer) answer(b []byte) []byte {
	for i, x := range b {
		if p.seen < len(upgraded) && x != upgraded[p.seen] {
			p.phase = sniffOff
			return nil
		}
		p.seen++
		p.tail = p.tail<<8 | uint32(x)
		if p.tail == 0x0d0a0d0a {
			p.phase = sniffHeader
			return b[i+1:]
		}
		if p.seen > 64<<10 {
			p.phase = sniffOff
			return nil
		}
	}
	return nil
}

func (p *closeSniffer) header(b []byte) []byte {
	for len(b) > 0 {
		p.hdr[p.hn] = b[0]
		p.hn++
		b = b[1:]
		if p.hn < 2 {
			continue
		}
		ext := 0
		switch p.hdr[1] & 0x7f {
		case 126:
			ext = 2
		case 127:
			ext = 8
		}
		maskLen := 0
		if p.hdr[1]&0x80 != 0 {
			maskLen = 4
		}
		if p.hn == 2+ext+maskLen {
			p.startFrame(ext, maskLen)
			return b
		}
	}
	return b
}

func (p *closeSniffer) startFrame(ext, maskLen int) {
	b0, b1 := p.hdr[0], p.hdr[1]
	op := b0 & 0x0f
	fin := b0&0x80 != 0
	n := uint64(b1 & 0x7f)
	switch ext {
	case 2:
		n = uint64(binary.BigEndian.Uint16(p.hdr[2:4]))
	case 8:
		n = binary.BigEndian.Uint64(p.hdr[2:10])
	}

	// No extension is negotiated, so the reserved bits stay clear; control frames are
	// short and never fragmented.
	valid := b0&0x70 == 0
	switch op {
	case 0, 1, 2:
	case 8, 9, 10:
		valid = valid && fin && n <= 125
	default:
		valid = false
	}
	if !valid {
		p.phase = sniffOff
		return
	}

	p.hn, p.pos, p.left = 0, 0, n
	p.isClose = op == 8
	p.masked = maskLen != 0
	if p.masked {
		copy(p.key[:], p.hdr[2+ext:2+ext+4])
	}
	if p.isClose && n == 0 && p.code == 0 {
		p.code = websocket.CloseNoStatusReceived
	}
	p.phase = sniffHeader
	if n > 0 {
		p.phase = sniffPayload
	}
}

func (p *closeSniffer) payload(b []byte) []byte {
	n := uint64(len(b))
	if n > p.left {
		n = p.left
	}
	// A close frame's payload is at most 125 bytes, so pos stays small.
	if p.isClose {
		for i := 0; i < int(n) && p.pos+i < 2 && p.code == 0; i++ {
			x := b[i]
			if p.masked {
				x ^= p.key[(p.pos+i)%4]
			}
			p.status[p.pos+i] = x
			if p.pos+i == 1 {
				p.code = int(binary.BigEndian.Uint16(p.status[:]))
			}
		}
		p.pos += int(n)
	}
	p.left -= n
	if p.left == 0 {
		p.phase = sniffHeader
	}
	return b[n:]
}
