package discordstub

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"
)

// frame is a gateway payload as a client reads it.
type frame struct {
	Op int             `json:"op"`
	S  *int64          `json:"s"`
	T  *string         `json:"t"`
	D  json.RawMessage `json:"d"`
}

func (f frame) seq() int64 {
	if f.S == nil {
		return 0
	}
	return *f.S
}

func (f frame) event() string {
	if f.T == nil {
		return ""
	}
	return *f.T
}

// wsClient is a bare gateway client, so that the tests see exactly what the stub sends.
type wsClient struct {
	t *testing.T
	c *websocket.Conn
}

func dialGateway(t *testing.T, s *Server) *wsClient {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.DialContext(t.Context(),
		s.GatewayURL()+"/?v=10&encoding=json", nil)
	if err != nil {
		t.Fatalf("dial gateway: %v", err)
	}
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = c.Close() })
	return &wsClient{t: t, c: c}
}

func (w *wsClient) read() frame {
	w.t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := w.c.ReadMessage()
	if err != nil {
		w.t.Fatalf("read gateway: %v", err)
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		w.t.Fatalf("frame %s: %v", data, err)
	}
	return f
}

// readEvent reads a dispatch and checks its sequence number and type.
func (w *wsClient) readEvent(seq int64, event string) frame {
	w.t.Helper()
	f := w.read()
	if f.Op != 0 || f.seq() != seq || f.event() != event {
		w.t.Fatalf("got op %d s %d t %q, want op 0 s %d t %q (d %s)",
			f.Op, f.seq(), f.event(), seq, event, f.D)
	}
	return f
}

// readClose reads until the stub closes the connection and returns the close code.
func (w *wsClient) readClose() int {
	w.t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, data, err := w.c.ReadMessage()
		if err == nil {
			continue
		}
		ce, ok := errors.AsType[*websocket.CloseError](err)
		if !ok {
			w.t.Fatalf("read error %v, want a close frame (last data %s)", err, data)
		}
		return ce.Code
	}
}

func (w *wsClient) send(op int, d any) {
	w.t.Helper()
	if err := w.c.WriteJSON(map[string]any{"op": op, "d": d}); err != nil {
		w.t.Fatalf("write op %d: %v", op, err)
	}
}

func (w *wsClient) hello() frame {
	w.t.Helper()
	f := w.read()
	if f.Op != 10 {
		w.t.Fatalf("first frame has op %d, want HELLO (10)", f.Op)
	}
	return f
}

func (w *wsClient) sendIdentify(token string, intents int) {
	w.t.Helper()
	w.send(2, map[string]any{
		"token":      token,
		"intents":    intents,
		"properties": map[string]string{"os": "linux", "browser": "test", "device": "test"},
	})
}

// identify opens a session with the GUILDS intent and more, reads READY and GUILD_CREATE and
// returns the session ID.
func (w *wsClient) identify(intents int) string {
	w.t.Helper()
	w.sendIdentify("Bot "+testToken, intents)
	f := w.readEvent(1, "READY")
	var d struct {
		SessionID string `json:"session_id"`
	}
	if err := json.Unmarshal(f.D, &d); err != nil || d.SessionID == "" {
		w.t.Fatalf("READY without session_id: %s", f.D)
	}
	w.readEvent(2, "GUILD_CREATE")
	return d.SessionID
}

func readExample(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, b).(map[string]any)
}

func keys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServer_gatewayURL(t *testing.T) {
	s := newServer(t)
	if !strings.HasPrefix(s.GatewayURL(), "ws://127.0.0.1:") {
		t.Fatalf("GatewayURL() = %q, want ws://127.0.0.1:…", s.GatewayURL())
	}
	base := strings.TrimSuffix(s.APIURL(), "/api/v10")

	for _, version := range []string{"v9", "v10"} {
		t.Run("gateway "+version, func(t *testing.T) {
			a := get(t, base+"/api/"+version+"/gateway", "")
			if a.status != http.StatusOK {
				t.Fatalf("status = %d, want 200 (body %s)", a.status, a.body)
			}
			want := readExample(t, "get_gateway.example.json")
			want["url"] = s.GatewayURL()
			if diff := cmp.Diff(want, decode(t, a.body)); diff != "" {
				t.Errorf("body mismatch (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("gateway bot", func(t *testing.T) {
		a := get(t, s.APIURL()+"/gateway/bot", "Bot "+testToken)
		if a.status != http.StatusOK {
			t.Fatalf("status = %d, want 200 (body %s)", a.status, a.body)
		}
		got := decode(t, a.body).(map[string]any)
		want := readExample(t, "get_gateway_bot.example.json")
		if diff := cmp.Diff(keys(want), keys(got)); diff != "" {
			t.Errorf("fields differ from Discord's example (-want +got):\n%s", diff)
		}
		if got["url"] != s.GatewayURL() {
			t.Errorf("url = %v, want %s", got["url"], s.GatewayURL())
		}
		if a := get(t, s.APIURL()+"/gateway/bot", ""); a.status != http.StatusUnauthorized {
			t.Errorf("without token: status = %d, want 401", a.status)
		}
	})
}

func TestServer_gatewayHandshake(t *testing.T) {
	s := newServer(t)
	s.SetHeartbeatInterval(1500 * time.Millisecond)
	w := dialGateway(t, s)

	hello := w.hello()
	var hd map[string]json.RawMessage
	if err := json.Unmarshal(hello.D, &hd); err != nil {
		t.Fatalf("HELLO data %s: %v", hello.D, err)
	}
	if got := string(hd["heartbeat_interval"]); got != "1500" {
		t.Errorf("heartbeat_interval = %s, want the integer 1500", got)
	}
	wantHello := readExample(t, "gateway_hello.example.json")["d"].(map[string]any)
	gotHello := decode(t, hello.D).(map[string]any)
	if diff := cmp.Diff(keys(wantHello), keys(gotHello)); diff != "" {
		t.Errorf("HELLO fields differ from Discord's example (-want +got):\n%s", diff)
	}

	w.sendIdentify("Bot "+testToken, intentGuilds|intentGuildMembers)
	ready := w.readEvent(1, "READY")
	var rd struct {
		SessionID        string `json:"session_id"`
		ResumeGatewayURL string `json:"resume_gateway_url"`
		User             struct {
			ID  string `json:"id"`
			Bot bool   `json:"bot"`
		} `json:"user"`
		Guilds []map[string]any `json:"guilds"`
	}
	if err := json.Unmarshal(ready.D, &rd); err != nil {
		t.Fatalf("READY data %s: %v", ready.D, err)
	}
	if rd.SessionID == "" || rd.ResumeGatewayURL != s.GatewayURL() {
		t.Errorf("READY session_id %q, resume_gateway_url %q; want an ID and %s",
			rd.SessionID, rd.ResumeGatewayURL, s.GatewayURL())
	}
	if rd.User.ID != DefaultBotUserID || !rd.User.Bot {
		t.Errorf("READY user = %+v, want the bot %s", rd.User, DefaultBotUserID)
	}
	wantGuilds := []map[string]any{{"id": testGuild, "unavailable": true}}
	if diff := cmp.Diff(wantGuilds, rd.Guilds); diff != "" {
		t.Errorf("READY guilds mismatch (-want +got):\n%s", diff)
	}

	gc := w.readEvent(2, "GUILD_CREATE")
	if id := decode(t, gc.D).(map[string]any)["id"]; id != testGuild {
		t.Errorf("GUILD_CREATE id = %v, want %s", id, testGuild)
	}

	w.send(1, 2)
	_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, ack, err := w.c.ReadMessage()
	if err != nil {
		t.Fatalf("read heartbeat ack: %v", err)
	}
	wantAck := readExample(t, "gateway_heartbeat_ack.example.json")
	if diff := cmp.Diff(wantAck, decode(t, ack)); diff != "" {
		t.Errorf("heartbeat ack mismatch (-want +got):\n%s", diff)
	}

	if s.Identifies() != 1 || s.LastIntents() != 3 || !s.Connected() {
		t.Errorf("Identifies() = %d, LastIntents() = %d, Connected() = %v; want 1, 3, true",
			s.Identifies(), s.LastIntents(), s.Connected())
	}
}

func TestServer_gatewayIdentify(t *testing.T) {
	tests := []struct {
		name      string
		refuse    bool
		token     string
		intents   int
		wantClose int // 0: READY expected
	}{
		{"guilds and members", false, "Bot " + testToken, 3, 0},
		{"token without Bot prefix", false, testToken, 3, 0},
		{"members refused", true, "Bot " + testToken, 3, 4014},
		{"refused but not asked for", true, "Bot " + testToken, 1, 0},
		{"wrong token", false, "Bot nope", 3, 4004},
		{"unknown intent bit", false, "Bot " + testToken, 1 << 30, 4013},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t)
			s.RefuseIntents(tt.refuse)
			w := dialGateway(t, s)
			w.hello()
			w.sendIdentify(tt.token, tt.intents)

			if tt.wantClose == 0 {
				w.readEvent(1, "READY")
			} else if got := w.readClose(); got != tt.wantClose {
				t.Errorf("close code = %d, want %d", got, tt.wantClose)
			}
			if s.Identifies() != 1 {
				t.Errorf("Identifies() = %d, want 1", s.Identifies())
			}
		})
	}
}

// TestServer_gatewayRefuseIntentsREST checks that the portal switch is one switch for both
// halves of the stub.
func TestServer_gatewayRefuseIntentsREST(t *testing.T) {
	s := newServer(t)
	s.RefuseIntents(true)
	a := get(t, s.APIURL()+"/guilds/"+testGuild+"/members?limit=10", "Bot "+testToken)
	if a.status != http.StatusForbidden {
		t.Errorf("listing members with the intent refused: status = %d, want 403", a.status)
	}
}

func TestServer_gatewayWithholdsMemberEvents(t *testing.T) {
	tests := []struct {
		name    string
		intents int
		want    []string // events after READY and GUILD_CREATE
	}{
		{"guilds only", intentGuilds, []string{"GUILD_ROLE_UPDATE"}},
		{"guilds and members", intentGuilds | intentGuildMembers,
			[]string{"GUILD_MEMBER_ADD", "GUILD_ROLE_UPDATE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t)
			w := dialGateway(t, s)
			w.hello()
			w.identify(tt.intents)

			if err := s.DispatchMemberAdd(ExampleMember()); err != nil {
				t.Fatal(err)
			}
			if err := s.DispatchRoleUpdate(ExampleRole()); err != nil {
				t.Fatal(err)
			}
			for i, event := range tt.want {
				w.readEvent(int64(3+i), event)
			}
		})
	}
}

func TestServer_gatewayPayloadShapes(t *testing.T) {
	s := newServer(t)
	role := ExampleRole()
	s.SetRoles(role)
	w := dialGateway(t, s)
	w.hello()
	w.identify(intentGuilds | intentGuildMembers)

	m := ExampleMember()
	m.Roles = []string{role.ID}
	m.Nick = Ptr("nelly-nick")
	steps := []struct {
		event, example string
		do             func() error
	}{
		{"GUILD_MEMBER_UPDATE", "gateway_guild_member_update.assembled.json",
			func() error { return s.DispatchMemberUpdate(m) }},
		{"GUILD_ROLE_UPDATE", "gateway_guild_role_update.assembled.json",
			func() error { return s.DispatchRoleUpdate(role) }},
		{"GUILD_MEMBER_REMOVE", "gateway_guild_member_remove.assembled.json",
			func() error { return s.DispatchMemberRemove(m.User.ID) }},
	}
	for i, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.event, err)
		}
		f := w.readEvent(int64(3+i), st.event)
		got := decode(t, f.D).(map[string]any)
		want := readExample(t, st.example)["d"].(map[string]any)
		if diff := cmp.Diff(keys(want), keys(got)); diff != "" {
			t.Errorf("%s fields differ from the example (-want +got):\n%s", st.event, diff)
		}
		if got["guild_id"] != testGuild {
			t.Errorf("%s guild_id = %v, want %s", st.event, got["guild_id"], testGuild)
		}
		if user, ok := got["user"].(map[string]any); strings.HasPrefix(st.event, "GUILD_MEMBER") &&
			(!ok || user["id"] != m.User.ID) {
			t.Errorf("%s user = %v, want the user %s", st.event, got["user"], m.User.ID)
		}
	}
}

// TestServer_gatewayKeepsRESTInStep checks that every dispatch leaves the REST answers in
// the state the event describes.
func TestServer_gatewayKeepsRESTInStep(t *testing.T) {
	s := newServer(t)
	bot := "Bot " + testToken
	role := ExampleRole()
	m := ExampleMember()
	m.Roles = []string{role.ID}
	memberURL := s.APIURL() + "/guilds/" + testGuild + "/members/" + m.User.ID
	rolesURL := s.APIURL() + "/guilds/" + testGuild + "/roles"

	roleIDs := func() []string {
		var roles []Role
		if err := json.Unmarshal(get(t, rolesURL, bot).body, &roles); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range roles {
			ids = append(ids, r.ID)
		}
		return ids
	}
	memberRoles := func() []string {
		var got Member
		if err := json.Unmarshal(get(t, memberURL, bot).body, &got); err != nil {
			t.Fatal(err)
		}
		return got.Roles
	}

	if err := s.DispatchRoleUpdate(role); err != nil {
		t.Fatal(err)
	}
	if got := roleIDs(); !slices.Contains(got, role.ID) {
		t.Errorf("after role update roles = %v, want %s among them", got, role.ID)
	}
	if err := s.DispatchMemberAdd(m); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{role.ID}, memberRoles()); diff != "" {
		t.Errorf("member roles after add (-want +got):\n%s", diff)
	}
	if err := s.DispatchRoleDelete(role.ID); err != nil {
		t.Fatal(err)
	}
	if got := roleIDs(); slices.Contains(got, role.ID) || !slices.Contains(got, testGuild) {
		t.Errorf("after role delete roles = %v, want @everyone without %s", got, role.ID)
	}
	if got := memberRoles(); len(got) != 0 {
		t.Errorf("member roles after role delete = %v, want none", got)
	}
	if err := s.DispatchMemberRemove(m.User.ID); err != nil {
		t.Fatal(err)
	}
	if a := get(t, memberURL, bot); a.status != http.StatusNotFound {
		t.Errorf("member after remove: status = %d, want 404", a.status)
	}

	if err := s.DispatchMemberRemove(m.User.ID); err == nil {
		t.Error("removing an unknown member: no error")
	}
	if err := s.DispatchRoleDelete(testGuild); err == nil {
		t.Error("deleting @everyone: no error")
	}
}

func TestServer_gatewayResume(t *testing.T) {
	// open identifies, reads READY and GUILD_CREATE, and cuts the socket without a close
	// frame, as a failing network does.
	open := func(t *testing.T, s *Server) string {
		t.Helper()
		w := dialGateway(t, s)
		w.hello()
		id := w.identify(intentGuilds | intentGuildMembers)
		_ = w.c.UnderlyingConn().Close()
		waitFor(t, "the stub to notice the lost connection", func() bool { return !s.Connected() })
		return id
	}

	t.Run("replays missed events", func(t *testing.T) {
		s := newServer(t)
		id := open(t, s)
		for _, nick := range []string{"one", "two"} {
			m := ExampleMember()
			m.Nick = Ptr(nick)
			if err := s.DispatchMemberUpdate(m); err != nil {
				t.Fatal(err)
			}
		}

		w := dialGateway(t, s)
		w.hello()
		w.send(6, map[string]any{"token": "Bot " + testToken, "session_id": id, "seq": 2})
		for i, nick := range []string{"one", "two"} {
			f := w.readEvent(int64(3+i), "GUILD_MEMBER_UPDATE")
			if got := decode(t, f.D).(map[string]any)["nick"]; got != nick {
				t.Errorf("replayed nick = %v, want %s", got, nick)
			}
		}
		w.readEvent(5, "RESUMED")
		if s.Resumes() != 1 || s.Identifies() != 1 || !s.Connected() {
			t.Errorf("Resumes() = %d, Identifies() = %d, Connected() = %v; want 1, 1, true",
				s.Resumes(), s.Identifies(), s.Connected())
		}
	})

	t.Run("unknown session", func(t *testing.T) {
		s := newServer(t)
		w := dialGateway(t, s)
		w.hello()
		w.send(6, map[string]any{"token": "Bot " + testToken, "session_id": "nope", "seq": 1})
		f := w.read()
		if diff := cmp.Diff(readExample(t, "gateway_invalid_session.example.json"),
			map[string]any{"op": float64(f.Op), "d": decode(t, f.D)}); diff != "" {
			t.Errorf("answer mismatch (-want +got):\n%s", diff)
		}
		w.identify(intentGuilds)
	})

	t.Run("sequence from the future", func(t *testing.T) {
		s := newServer(t)
		id := open(t, s)
		w := dialGateway(t, s)
		w.hello()
		w.send(6, map[string]any{"token": "Bot " + testToken, "session_id": id, "seq": 99})
		if got := w.readClose(); got != 4007 {
			t.Errorf("close code = %d, want 4007", got)
		}
	})

	t.Run("client closed normally", func(t *testing.T) {
		s := newServer(t)
		w := dialGateway(t, s)
		w.hello()
		id := w.identify(intentGuilds)
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		if err := w.c.WriteMessage(websocket.CloseMessage, msg); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the stub to end the session", func() bool { return !s.Connected() })

		w2 := dialGateway(t, s)
		w2.hello()
		w2.send(6, map[string]any{"token": "Bot " + testToken, "session_id": id, "seq": 2})
		if f := w2.read(); f.Op != 9 {
			t.Errorf("resuming a closed session: op %d, want INVALID_SESSION (9)", f.Op)
		}
	})
}

func TestServer_gatewayInvalidSession(t *testing.T) {
	tests := []struct {
		name      string
		resumable bool
	}{
		{"not resumable", false},
		{"resumable", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t)
			w := dialGateway(t, s)
			w.hello()
			first := w.identify(intentGuilds | intentGuildMembers)

			s.PauseDispatch(true)
			if err := s.DispatchMemberAdd(ExampleMember()); err != nil {
				t.Fatal(err)
			}
			s.SendInvalidSession(tt.resumable)
			f := w.read()
			if f.Op != 9 || string(f.D) != map[bool]string{true: "true", false: "false"}[tt.resumable] {
				t.Fatalf("got op %d d %s, want INVALID_SESSION with d %v", f.Op, f.D, tt.resumable)
			}
			if s.Connected() {
				t.Error("Connected() = true after INVALID_SESSION")
			}

			// The held member event belongs to the old session: the new one never sees it.
			second := w.identify(intentGuilds | intentGuildMembers)
			if second == first {
				t.Error("new session has the old session's ID")
			}
			s.PauseDispatch(false)
			if err := s.DispatchRoleUpdate(ExampleRole()); err != nil {
				t.Fatal(err)
			}
			w.readEvent(3, "GUILD_ROLE_UPDATE")
		})
	}
}

func TestServer_gatewayPauseDispatch(t *testing.T) {
	s := newServer(t)
	w := dialGateway(t, s)
	w.hello()
	w.identify(intentGuilds)

	s.PauseDispatch(true)
	if err := s.DispatchRoleUpdate(ExampleRole()); err != nil {
		t.Fatal(err)
	}
	// Frames arrive in order, so the ack proves the role update was held.
	w.send(1, 2)
	if f := w.read(); f.Op != 11 {
		t.Fatalf("got op %d %s while paused, want the heartbeat ack", f.Op, f.event())
	}
	s.PauseDispatch(false)
	w.readEvent(3, "GUILD_ROLE_UPDATE")
}

func TestServer_gatewayServerActions(t *testing.T) {
	tests := []struct {
		name  string
		do    func(*Server)
		check func(*testing.T, *wsClient)
	}{
		{"reconnect", (*Server).SendReconnect, func(t *testing.T, w *wsClient) {
			f := w.read()
			got := map[string]any{"op": float64(f.Op), "d": decode(t, f.D)}
			if diff := cmp.Diff(readExample(t, "gateway_reconnect.example.json"), got); diff != "" {
				t.Errorf("RECONNECT mismatch (-want +got):\n%s", diff)
			}
		}},
		{"close with code", func(s *Server) { s.CloseWith(4000, "Unknown error.") },
			func(t *testing.T, w *wsClient) {
				if got := w.readClose(); got != 4000 {
					t.Errorf("close code = %d, want 4000", got)
				}
			}},
		{"drop connection", (*Server).DropConnection, func(t *testing.T, w *wsClient) {
			_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err := w.c.ReadMessage()
			// The websocket library reports a connection that ends without a close frame
			// as 1006, a code no peer may send.
			if !websocket.IsCloseError(err, websocket.CloseAbnormalClosure) {
				t.Errorf("read after drop: %v, want a broken connection without close frame", err)
			}
		}},
		{"server closed", func(s *Server) { _ = s.Close() }, func(t *testing.T, w *wsClient) {
			_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := w.c.ReadMessage(); err == nil {
				t.Error("read after Close: no error")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t)
			w := dialGateway(t, s)
			w.hello()
			w.identify(intentGuilds)
			tt.do(s)
			tt.check(t, w)
		})
	}
}
