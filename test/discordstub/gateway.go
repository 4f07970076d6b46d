package discordstub

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Gateway intents the stub looks at; every other known bit is accepted and ignored.
const (
	intentGuilds       = 1 << 0
	intentGuildMembers = 1 << 1
	knownIntents       = 1<<26 - 1
)

const (
	// defaultHeartbeat is the interval Discord announces in HELLO today.
	defaultHeartbeat = 41250 * time.Millisecond

	// replayLimit bounds the dispatches a session keeps for RESUME; an older seq gets an
	// INVALID_SESSION, as when Discord's own buffer has run out.
	replayLimit = 1000

	// maxSessions bounds the sessions kept for resuming; the oldest unconnected ones go first.
	maxSessions = 32

	// outBacklog is how many frames may wait for a slow client before the stub drops it.
	outBacklog = 4096

	writeTimeout = 5 * time.Second

	// closeGrace is how long the socket stays open after a close frame, so that the client
	// reads the frame instead of a reset connection.
	closeGrace = 2 * time.Second
)

// Close codes of Discord's gateway the stub sends.
const (
	closeUnknownOpcode  = 4001
	closeDecodeError    = 4002
	closeNotAuth        = 4003
	closeAuthFailed     = 4004
	closeAlreadyAuth    = 4005
	closeInvalidSeq     = 4007
	closeInvalidIntents = 4013
	closeDisallowed     = 4014
)

// gateway is the websocket half of the stub. Its lock is never held while taking Server.mu.
type gateway struct {
	mu          sync.Mutex
	heartbeat   time.Duration
	paused      bool
	closed      bool
	sessions    map[string]*gwSession
	conns       map[*gwConn]struct{}
	created     int // sessions ever made, for eviction order
	identifies  int
	resumes     int
	lastIntents int
}

// gwSession is one gateway session: what RESUME continues and what dispatches are sent to.
type gwSession struct {
	id      string
	intents int
	order   int
	seq     int64      // last sequence number given out
	sent    int64      // last sequence number written to conn
	pruned  int64      // highest sequence number no longer in log
	log     []dispatch // ascending seq
	conn    *gwConn    // nil while no connection carries the session
}

type dispatch struct {
	seq   int64
	frame []byte
}

// gwConn is one websocket connection. Only its write loop writes to ws.
type gwConn struct {
	ws   *websocket.Conn
	out  chan outFrame
	done chan struct{}
	once sync.Once

	// guarded by gateway.mu
	sess    *gwSession
	closing bool // the stub sent a close frame
}

// outFrame is a text frame, or a close frame when code is set.
type outFrame struct {
	data   []byte
	code   int
	reason string
}

func newGateway() *gateway {
	return &gateway{
		heartbeat: defaultHeartbeat,
		sessions:  map[string]*gwSession{},
		conns:     map[*gwConn]struct{}{},
	}
}

// gatewayRoutes serves GET /gateway and /gateway/bot under both API versions, and the
// websocket itself at /gateway, where GatewayURL points.
func (s *Server) gatewayRoutes(mux *http.ServeMux) {
	const route = "GET /gateway"
	// Discord answers GET /gateway without a token; discordgo sends one anyway.
	mux.HandleFunc("GET /api/{version}/gateway", func(w http.ResponseWriter, r *http.Request) {
		if v := r.PathValue("version"); v != "v9" && v != "v10" {
			s.unknownRoute(w, r)
			return
		}
		if s.inject(w, route) {
			return
		}
		s.getGateway(w, r)
	})
	s.api(mux, "GET /gateway/bot", s.getGatewayBot)
	mux.HandleFunc("GET /gateway", s.serveGateway)
	mux.HandleFunc("GET /gateway/{$}", s.serveGateway)
}

// GatewayURL is the websocket URL GET /gateway answers with, e.g. ws://127.0.0.1:PORT/gateway.
func (s *Server) GatewayURL() string {
	return "ws" + strings.TrimPrefix(s.base, "http") + "/gateway"
}

// SetHeartbeatInterval sets the interval announced in HELLO to later connections.
func (s *Server) SetHeartbeatInterval(d time.Duration) {
	s.gw.mu.Lock()
	defer s.gw.mu.Unlock()
	s.gw.heartbeat = d
}

// RefuseIntents switches the Server Members intent off (true) or on in the developer portal,
// for both halves of the stub: an IDENTIFY asking for GUILD_MEMBERS is closed with 4014 and
// listing members answers 403 (see SetMembersIntent). Sessions already open are left alone.
func (s *Server) RefuseIntents(refuse bool) { s.SetMembersIntent(!refuse) }

// PauseDispatch holds events instead of sending them. Held events stay in each session's
// history: PauseDispatch(false) sends them in order and a RESUME replays them, but a new
// session (after INVALID_SESSION or a fresh IDENTIFY) never gets them, as on Discord.
// READY, GUILD_CREATE, RESUMED and the control opcodes are not held.
func (s *Server) PauseDispatch(pause bool) {
	g := s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	g.paused = pause
	if pause {
		return
	}
	for _, sess := range g.sessions {
		g.flush(sess)
	}
}

// Identifies counts IDENTIFY payloads received, refused ones included.
func (s *Server) Identifies() int {
	s.gw.mu.Lock()
	defer s.gw.mu.Unlock()
	return s.gw.identifies
}

// Resumes counts sessions resumed successfully.
func (s *Server) Resumes() int {
	s.gw.mu.Lock()
	defer s.gw.mu.Unlock()
	return s.gw.resumes
}

// Connected reports whether a connection currently carries a session (after READY or
// RESUMED, until it closes or gets INVALID_SESSION).
func (s *Server) Connected() bool {
	s.gw.mu.Lock()
	defer s.gw.mu.Unlock()
	for c := range s.gw.conns {
		if c.sess != nil {
			return true
		}
	}
	return false
}

// LastIntents is the intents field of the last IDENTIFY, 0 if none arrived.
func (s *Server) LastIntents() int {
	s.gw.mu.Lock()
	defer s.gw.mu.Unlock()
	return s.gw.lastIntents
}

// SendInvalidSession sends op 9 to every connection carrying a session. The connections stay
// open for a new IDENTIFY or RESUME. Unless resumable, the sessions and the events they had
// not yet received are gone.
func (s *Server) SendInvalidSession(resumable bool) {
	g := s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	frame, _ := json.Marshal(map[string]any{"op": 9, "d": resumable})
	for c := range g.conns {
		sess := c.sess
		if sess == nil {
			continue
		}
		c.sess, sess.conn = nil, nil
		if !resumable {
			delete(g.sessions, sess.id)
		}
		g.send(c, outFrame{data: frame})
	}
}

// SendReconnect sends op 7 to every connection carrying a session; the client is expected to
// close the connection and resume.
func (s *Server) SendReconnect() {
	g := s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		if c.sess != nil {
			g.send(c, outFrame{data: []byte(`{"op":7,"d":null}`)})
		}
	}
}

// CloseWith closes every gateway connection with a close frame. The sessions stay resumable
// unless code says otherwise (4004, 4007, 4009, 4010 to 4014).
func (s *Server) CloseWith(code int, reason string) {
	g := s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		g.closeConn(c, code, reason)
	}
}

// DropConnection cuts every gateway connection without a close frame, as a network failure
// would. The sessions stay resumable; events dispatched from now on wait for a RESUME.
func (s *Server) DropConnection() {
	g := s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		g.detach(c)
		delete(g.conns, c)
		c.kill()
	}
}

// DispatchMemberAdd stores m as a member (as SetMember does) and sends GUILD_MEMBER_ADD to
// the sessions with the GUILD_MEMBERS intent.
func (s *Server) DispatchMemberAdd(m Member) error {
	return s.dispatchMember("GUILD_MEMBER_ADD", m)
}

// DispatchMemberUpdate stores m as a member (as SetMember does) and sends
// GUILD_MEMBER_UPDATE to the sessions with the GUILD_MEMBERS intent.
func (s *Server) DispatchMemberUpdate(m Member) error {
	return s.dispatchMember("GUILD_MEMBER_UPDATE", m)
}

// DispatchMemberRemove removes a known member (as RemoveMember does) and sends
// GUILD_MEMBER_REMOVE with the member's user to the sessions with the GUILD_MEMBERS intent.
func (s *Server) DispatchMemberRemove(userID string) error {
	s.mu.Lock()
	raw, ok := s.members[userID]
	delete(s.members, userID)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("discordstub: no member %q to remove", userID)
	}

	var m struct {
		User json.RawMessage `json:"user"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("discordstub: stored member: %w", err)
	}
	d := map[string]any{"guild_id": s.opts.GuildID, "user": m.User}
	return s.dispatch("GUILD_MEMBER_REMOVE", intentGuildMembers, d)
}

// DispatchRoleUpdate adds or replaces the role in the guild's roles and sends
// GUILD_ROLE_UPDATE to the sessions with the GUILDS intent.
func (s *Server) DispatchRoleUpdate(r Role) error {
	if !snowflake(r.ID) {
		return fmt.Errorf("discordstub: role id %q is not a snowflake", r.ID)
	}
	r.Colors.PrimaryColor = r.Color

	s.mu.Lock()
	replaced := false
	for i := range s.roles {
		if s.roles[i].ID == r.ID {
			s.roles[i], replaced = r, true
		}
	}
	if !replaced {
		s.roles = append(s.roles, r)
	}
	s.mu.Unlock()

	d := map[string]any{"guild_id": s.opts.GuildID, "role": r}
	return s.dispatch("GUILD_ROLE_UPDATE", intentGuilds, d)
}

// DispatchRoleDelete removes the role from the guild and from every member, as Discord does
// without sending member updates, and sends GUILD_ROLE_DELETE to the sessions with the
// GUILDS intent.
func (s *Server) DispatchRoleDelete(roleID string) error {
	if roleID == s.opts.GuildID {
		return errors.New("discordstub: @everyone cannot be deleted")
	}

	s.mu.Lock()
	found := false
	kept := make([]Role, 0, len(s.roles))
	for _, r := range s.roles {
		if r.ID == roleID {
			found = true
			continue
		}
		kept = append(kept, r)
	}
	var err error
	if found {
		s.roles = kept
		err = s.stripRoleLocked(roleID)
	}
	s.mu.Unlock()
	if !found {
		return fmt.Errorf("discordstub: no role %q to delete", roleID)
	}
	if err != nil {
		return err
	}

	d := map[string]any{"guild_id": s.opts.GuildID, "role_id": roleID}
	return s.dispatch("GUILD_ROLE_DELETE", intentGuilds, d)
}

// stripRoleLocked removes roleID from every stored member's roles, leaving the other fields
// of the stored JSON as they were.
func (s *Server) stripRoleLocked(roleID string) error {
	for id, raw := range s.members {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil {
			return fmt.Errorf("discordstub: stored member %s: %w", id, err)
		}
		var roles []string
		if err := json.Unmarshal(fields["roles"], &roles); err != nil {
			return fmt.Errorf("discordstub: roles of member %s: %w", id, err)
		}
		kept := make([]string, 0, len(roles))
		for _, r := range roles {
			if r != roleID {
				kept = append(kept, r)
			}
		}
		if len(kept) == len(roles) {
			continue
		}
		fields["roles"], _ = json.Marshal(kept) // a string slice always marshals
		updated, err := json.Marshal(fields)
		if err != nil {
			return fmt.Errorf("discordstub: encode member %s: %w", id, err)
		}
		s.members[id] = updated
	}
	return nil
}

func (s *Server) dispatchMember(event string, m Member) error {
	if err := s.SetMember(m); err != nil {
		return err
	}
	if m.Roles == nil {
		m.Roles = []string{}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("discordstub: encode member: %w", err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return fmt.Errorf("discordstub: member json: %w", err)
	}
	fields["guild_id"], _ = json.Marshal(s.opts.GuildID) // a string always marshals
	return s.dispatch(event, intentGuildMembers, fields)
}

// dispatch sends an event to every session whose intents include need.
func (s *Server) dispatch(event string, need int, d any) error {
	raw, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("discordstub: encode %s: %w", event, err)
	}

	g := s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, sess := range g.sessions {
		if sess.intents&need != 0 {
			g.dispatchTo(sess, event, raw, false)
		}
	}
	return nil
}

func (s *Server) getGateway(w http.ResponseWriter, _ *http.Request) {
	body, _ := json.Marshal(map[string]string{"url": s.GatewayURL()})
	writeJSON(w, http.StatusOK, body)
}

// getGatewayBot answers one shard and a full session start budget.
func (s *Server) getGatewayBot(w http.ResponseWriter, _ *http.Request) {
	body, _ := json.Marshal(map[string]any{
		"url":    s.GatewayURL(),
		"shards": 1,
		"session_start_limit": map[string]int{
			"total":           1000,
			"remaining":       999,
			"reset_after":     14400000,
			"max_concurrency": 1,
		},
	})
	writeJSON(w, http.StatusOK, body)
}

var upgrader = websocket.Upgrader{HandshakeTimeout: 10 * time.Second}

// serveGateway runs one websocket connection: HELLO first, then whatever the client sends.
func (s *Server) serveGateway(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the request
	}
	c := &gwConn{ws: ws, out: make(chan outFrame, outBacklog), done: make(chan struct{})}
	go c.writeLoop()

	g := s.gw
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		c.kill()
		return
	}
	g.conns[c] = struct{}{}
	hello, _ := json.Marshal(map[string]any{
		"op": 10,
		"d":  map[string]int64{"heartbeat_interval": g.heartbeat.Milliseconds()},
		"s":  nil,
		"t":  nil,
	})
	g.send(c, outFrame{data: hello})
	g.mu.Unlock()

	s.readLoop(c)
}

// payload is a gateway payload as the stub reads it.
type payload struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
}

func (s *Server) readLoop(c *gwConn) {
	clientCode := 0
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			if ce, ok := errors.AsType[*websocket.CloseError](err); ok {
				clientCode = ce.Code
			}
			break
		}
		var p payload
		if err := json.Unmarshal(data, &p); err != nil {
			s.gw.close(c, closeDecodeError, "Error while decoding payload.")
			continue
		}
		switch p.Op {
		case 1:
			s.gw.reply(c, []byte(`{"op":11}`))
		case 2:
			s.identify(c, p.D)
		case 6:
			s.resume(c, p.D)
		case 3, 4, 8:
			// Presence, voice state and member requests: accepted and not answered.
			if !s.gw.authenticated(c) {
				s.gw.close(c, closeNotAuth, "Not authenticated.")
			}
		default:
			s.gw.close(c, closeUnknownOpcode, "Unknown opcode.")
		}
	}

	g := s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	// A client closing with 1000 or 1001 ends its session on Discord; an echo of the stub's
	// own close frame does not.
	if sess := c.sess; sess != nil && !c.closing && (clientCode == 1000 || clientCode == 1001) {
		delete(g.sessions, sess.id)
	}
	g.detach(c)
	delete(g.conns, c)
	c.kill()
}

// identify answers op 2: a new session with READY and GUILD_CREATE, or a close code.
func (s *Server) identify(c *gwConn, raw json.RawMessage) {
	var d struct {
		Token   string `json:"token"`
		Intents *int   `json:"intents"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		s.gw.close(c, closeDecodeError, "Error while decoding payload.")
		return
	}
	// Read the REST half first: the gateway lock is never held while taking s.mu.
	s.mu.Lock()
	membersAllowed := s.membersIntent
	s.mu.Unlock()
	guild, err := json.Marshal(s.guildCreate())
	if err != nil {
		s.gw.close(c, 4000, "Unknown error.")
		return
	}

	g := s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	g.identifies++
	if d.Intents != nil {
		g.lastIntents = *d.Intents
	}
	switch {
	case c.closing:
		return
	case c.sess != nil:
		g.closeConn(c, closeAlreadyAuth, "Already authenticated.")
		return
	case !s.tokenOK(d.Token):
		g.closeConn(c, closeAuthFailed, "Authentication failed.")
		return
	case d.Intents == nil || *d.Intents < 0 || *d.Intents&^knownIntents != 0:
		g.closeConn(c, closeInvalidIntents, "Invalid intent(s).")
		return
	case *d.Intents&intentGuildMembers != 0 && !membersAllowed:
		g.closeConn(c, closeDisallowed, "Disallowed intent(s).")
		return
	}

	sess := g.newSession(*d.Intents)
	sess.conn, c.sess = c, sess
	ready, _ := json.Marshal(s.ready(sess.id)) // maps of strings and numbers always marshal
	g.dispatchTo(sess, "READY", ready, true)
	if sess.intents&intentGuilds != 0 {
		g.dispatchTo(sess, "GUILD_CREATE", guild, true)
	}
}

// resume answers op 6: the missed dispatches and RESUMED, INVALID_SESSION, or a close code.
func (s *Server) resume(c *gwConn, raw json.RawMessage) {
	var d struct {
		Token     string `json:"token"`
		SessionID string `json:"session_id"`
		Seq       int64  `json:"seq"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		s.gw.close(c, closeDecodeError, "Error while decoding payload.")
		return
	}

	g := s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	if c.closing {
		return
	}
	if c.sess != nil {
		g.closeConn(c, closeAlreadyAuth, "Already authenticated.")
		return
	}
	if !s.tokenOK(d.Token) {
		g.closeConn(c, closeAuthFailed, "Authentication failed.")
		return
	}
	sess := g.sessions[d.SessionID]
	switch {
	case sess == nil:
		g.send(c, outFrame{data: []byte(`{"op":9,"d":false}`)})
		return
	case d.Seq > sess.seq:
		delete(g.sessions, sess.id)
		g.closeConn(c, closeInvalidSeq, "Invalid seq.")
		return
	case d.Seq < sess.pruned:
		delete(g.sessions, sess.id)
		g.send(c, outFrame{data: []byte(`{"op":9,"d":false}`)})
		return
	}

	if old := sess.conn; old != nil {
		old.sess = nil
		delete(g.conns, old)
		old.kill()
	}
	sess.conn, c.sess = c, sess
	sess.sent = d.Seq
	g.replay(sess)

	// RESUMED takes a sequence number but is not kept for a later replay.
	sess.seq++
	g.send(c, outFrame{data: encodeDispatch(sess.seq, "RESUMED", []byte(`{}`))})
	sess.sent = sess.seq
	g.resumes++
}

func (s *Server) tokenOK(token string) bool {
	return strings.TrimPrefix(token, "Bot ") == s.opts.Token
}

// ready is READY's data: the bot user, the guild as unavailable, and where to resume.
func (s *Server) ready(sessionID string) map[string]any {
	return map[string]any{
		"v": 10,
		"user": map[string]any{
			"id":            s.opts.BotUserID,
			"username":      "bridge-bot",
			"discriminator": "4821",
			"global_name":   nil,
			"avatar":        nil,
			"bot":           true,
			"public_flags":  0,
			"flags":         0,
			"mfa_enabled":   true,
			"verified":      true,
			"email":         nil,
		},
		"guilds":             []map[string]any{{"id": s.opts.GuildID, "unavailable": true}},
		"session_id":         sessionID,
		"session_type":       "normal",
		"resume_gateway_url": s.GatewayURL(),
		"shard":              []int{0, 1},
		"application":        map[string]any{"id": s.opts.BotUserID, "flags": 0},
		"private_channels":   []any{},
	}
}

// guildCreate is GUILD_CREATE's data: the guild with its roles. Like Discord without the
// presences intent it lists no members beyond what member events bring.
func (s *Server) guildCreate() map[string]any {
	s.mu.Lock()
	roles := append([]Role(nil), s.roles...)
	count := len(s.members)
	s.mu.Unlock()

	return map[string]any{
		"id":                     s.opts.GuildID,
		"name":                   s.opts.GuildName,
		"icon":                   nil,
		"owner_id":               ownerID,
		"features":               []string{},
		"roles":                  roles,
		"emojis":                 []any{},
		"stickers":               []any{},
		"joined_at":              "2015-04-26T06:26:56.936000+00:00",
		"large":                  count > 250,
		"unavailable":            false,
		"member_count":           count,
		"members":                []any{},
		"channels":               []any{},
		"threads":                []any{},
		"presences":              []any{},
		"voice_states":           []any{},
		"stage_instances":        []any{},
		"guild_scheduled_events": []any{},
		"premium_tier":           0,
		"preferred_locale":       "en-US",
	}
}

func (g *gateway) newSession(intents int) *gwSession {
	if len(g.sessions) >= maxSessions {
		var oldest *gwSession
		for _, sess := range g.sessions {
			if sess.conn == nil && (oldest == nil || sess.order < oldest.order) {
				oldest = sess
			}
		}
		if oldest != nil {
			delete(g.sessions, oldest.id)
		}
	}

	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	g.created++
	sess := &gwSession{id: hex.EncodeToString(b[:]), intents: intents, order: g.created}
	g.sessions[sess.id] = sess
	return sess
}

// dispatchTo gives the event the session's next sequence number, keeps it for RESUME and
// sends it unless dispatches are paused (force ignores the pause).
func (g *gateway) dispatchTo(sess *gwSession, event string, d []byte, force bool) {
	sess.seq++
	sess.log = append(sess.log, dispatch{seq: sess.seq, frame: encodeDispatch(sess.seq, event, d)})
	if over := len(sess.log) - replayLimit; over > 0 {
		sess.pruned = sess.log[over-1].seq
		sess.log = append(sess.log[:0:0], sess.log[over:]...)
	}
	if force || !g.paused {
		g.flush(sess)
	}
}

// flush sends the session's kept dispatches its connection has not had yet.
func (g *gateway) flush(sess *gwSession) {
	if sess.conn != nil {
		g.replay(sess)
	}
}

func (g *gateway) replay(sess *gwSession) {
	for _, d := range sess.log {
		if d.seq > sess.sent {
			g.send(sess.conn, outFrame{data: d.frame})
			sess.sent = d.seq
		}
	}
}

func encodeDispatch(seq int64, event string, d []byte) []byte {
	frame, _ := json.Marshal(struct {
		Op int             `json:"op"`
		S  int64           `json:"s"`
		T  string          `json:"t"`
		D  json.RawMessage `json:"d"`
	}{0, seq, event, d}) // d is valid JSON, so this always marshals
	return frame
}

// send queues a frame; a client too slow to take outBacklog frames is cut off.
func (g *gateway) send(c *gwConn, f outFrame) {
	select {
	case c.out <- f:
	default:
		g.detach(c)
		delete(g.conns, c)
		c.kill()
	}
}

func (g *gateway) reply(c *gwConn, frame []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.send(c, outFrame{data: frame})
}

func (g *gateway) authenticated(c *gwConn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return c.sess != nil
}

func (g *gateway) close(c *gwConn, code int, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closeConn(c, code, reason)
}

// closeConn sends a close frame and detaches the connection's session, which ends unless
// Discord would let it be resumed after this code.
func (g *gateway) closeConn(c *gwConn, code int, reason string) {
	if c.closing {
		return
	}
	c.closing = true
	if sess := c.sess; sess != nil && !resumableClose(code) {
		delete(g.sessions, sess.id)
	}
	g.detach(c)
	g.send(c, outFrame{code: code, reason: reason})
}

// detach separates a connection from its session; the session stays as it is.
func (g *gateway) detach(c *gwConn) {
	if sess := c.sess; sess != nil && sess.conn == c {
		sess.conn = nil
	}
	c.sess = nil
}

// shutdown cuts every connection and refuses new ones; Server.Close calls it, since the HTTP
// server does not track hijacked connections.
func (g *gateway) shutdown() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for c := range g.conns {
		g.detach(c)
		delete(g.conns, c)
		c.kill()
	}
}

// resumableClose reports whether Discord lets a session be resumed after the close code.
func resumableClose(code int) bool {
	switch code {
	case closeAuthFailed, closeInvalidSeq, 4009, 4010, 4011, 4012, closeInvalidIntents,
		closeDisallowed:
		return false
	}
	return true
}

func (c *gwConn) writeLoop() {
	for {
		select {
		case <-c.done:
			return
		case f := <-c.out:
			_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
			if f.code != 0 {
				_ = c.ws.WriteMessage(websocket.CloseMessage,
					websocket.FormatCloseMessage(f.code, f.reason))
				t := time.NewTimer(closeGrace)
				select {
				case <-c.done:
				case <-t.C:
				}
				t.Stop()
				c.kill()
				return
			}
			if err := c.ws.WriteMessage(websocket.TextMessage, f.data); err != nil {
				c.kill()
				return
			}
		}
	}
}

// kill closes the socket without a close frame; the read loop then ends.
func (c *gwConn) kill() {
	c.once.Do(func() {
		close(c.done)
		_ = c.ws.Close()
	})
}
