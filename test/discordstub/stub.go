// Package discordstub stands in for Discord's REST API and CDN on a loopback listener, so that
// tests and the local sandbox can run the bridge without Discord. It answers in Discord's own
// shapes and error codes, built from the payloads of Discord's documentation in testdata/, and
// can be told to rate-limit, fail or answer garbage.
//
// One listener serves all three: the REST API under /api/v10 (and /api/v9, which discordgo uses
// for some calls), the CDN under /cdn and the gateway websocket at /gateway (see gateway.go).
// It needs no *testing.T; every method is safe for concurrent use.
package discordstub

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultBotUserID is the ID of the bot user GET /users/@me answers with. It has 19 digits, so a
// client that parses snowflakes as float64 gets it wrong.
const DefaultBotUserID = "1234567890123456789"

// ownerID is the documented example user, named as the guild's owner.
const ownerID = "80351110224678912"

// Options configure a Server.
type Options struct {
	GuildID   string // the one guild the stub knows; other guilds answer 10004 Unknown Guild
	Token     string // the bot token accepted as "Authorization: Bot <token>"
	Addr      string // listen address, default 127.0.0.1:0
	GuildName string // default "Bridge Test Guild"
	BotUserID string // default DefaultBotUserID
}

// Counts are the requests the stub received since it started or since ResetCounts.
type Counts struct {
	Total       int            // every request, API and CDN
	ByRoute     map[string]int // by route, e.g. "GET /guilds/{guild}/members/{user}"
	RateLimited int            // requests answered with an injected 429
}

// Server is a running stand-in. Close it when done.
type Server struct {
	opts Options
	srv  *http.Server
	base string

	mu            sync.Mutex
	members       map[string]json.RawMessage // by user ID, Discord's member JSON
	roles         []Role
	avatars       map[string]avatar // by CDN path without leading slash
	membersIntent bool
	limits        int
	limitAfter    float64
	limitGlobal   bool
	failures      int
	failStatus    int
	garbage       int
	counts        Counts

	gw *gateway
}

type avatar struct {
	contentType string
	body        []byte
}

// New starts a stub on a real listener.
func New(o Options) (*Server, error) {
	if errExamples != nil {
		return nil, fmt.Errorf("discordstub: %w", errExamples)
	}
	if !snowflake(o.GuildID) {
		return nil, fmt.Errorf("discordstub: guild id %q is not a snowflake", o.GuildID)
	}
	if o.Token == "" {
		return nil, errors.New("discordstub: token is empty")
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.GuildName == "" {
		o.GuildName = "Bridge Test Guild"
	}
	if o.BotUserID == "" {
		o.BotUserID = DefaultBotUserID
	}

	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("discordstub: listen: %w", err)
	}

	s := &Server{
		opts:          o,
		base:          "http://" + ln.Addr().String(),
		members:       map[string]json.RawMessage{},
		roles:         []Role{everyone(o.GuildID)},
		avatars:       map[string]avatar{},
		membersIntent: true,
		counts:        Counts{ByRoute: map[string]int{}},
		gw:            newGateway(),
	}

	mux := http.NewServeMux()
	s.api(mux, "GET /guilds/{guild}/members/{user}", s.getMember)
	s.api(mux, "GET /guilds/{guild}/members", s.listMembers)
	s.api(mux, "GET /guilds/{guild}/roles", s.listRoles)
	s.api(mux, "GET /guilds/{guild}", s.getGuild)
	s.api(mux, "GET /users/@me", s.getBotUser)
	s.gatewayRoutes(mux)
	mux.HandleFunc("/api/", s.unknownRoute)
	mux.HandleFunc("GET /cdn/{path...}", s.cdn)
	mux.HandleFunc("/", s.unknownRoute)

	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }() // Serve returns ErrServerClosed on Close
	return s, nil
}

// APIURL is the REST base URL, e.g. http://127.0.0.1:PORT/api/v10.
func (s *Server) APIURL() string { return s.base + "/api/v10" }

// CDNURL is the CDN base URL on the same listener, e.g. http://127.0.0.1:PORT/cdn.
func (s *Server) CDNURL() string { return s.base + "/cdn" }

// BotUserID is the ID of the bot user the stub answers GET /users/@me with.
func (s *Server) BotUserID() string { return s.opts.BotUserID }

// Close stops the listener and drops open connections, gateway websockets included.
func (s *Server) Close() error {
	s.gw.shutdown()
	return s.srv.Close()
}

// SetMember adds or replaces a member of the guild.
func (s *Server) SetMember(m Member) error {
	if m.Roles == nil {
		m.Roles = []string{}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("discordstub: encode member: %w", err)
	}
	return s.SetMemberJSON(raw)
}

// SetMemberJSON adds or replaces a member given as Discord's member JSON, kept byte for byte.
// It must carry user.id and, like Discord's body, no guild_id.
func (s *Server) SetMemberJSON(raw []byte) error {
	var probe struct {
		GuildID *json.RawMessage `json:"guild_id"`
		User    *struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return fmt.Errorf("discordstub: member json: %w", err)
	}
	if probe.User == nil || !snowflake(probe.User.ID) {
		return errors.New("discordstub: member json needs user.id as a snowflake string")
	}
	if probe.GuildID != nil {
		return errors.New("discordstub: member json has guild_id, which Discord's body never has")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.members[probe.User.ID] = append(json.RawMessage(nil), raw...)
	return nil
}

// RemoveMember makes the user a non-member (10007 Unknown Member).
func (s *Server) RemoveMember(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.members, userID)
}

// SetRoles replaces the guild's roles. @everyone (ID = guild ID, position 0) is added unless
// given, as Discord always lists it. Colors.PrimaryColor is set to Color, as Discord keeps them.
func (s *Server) SetRoles(roles ...Role) {
	list := make([]Role, 0, len(roles)+1)
	hasEveryone := false
	for _, r := range roles {
		r.Colors.PrimaryColor = r.Color
		hasEveryone = hasEveryone || r.ID == s.opts.GuildID
		list = append(list, r)
	}
	if !hasEveryone {
		list = append([]Role{everyone(s.opts.GuildID)}, list...)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.roles = list
}

// SetMembersIntent switches the Server Members intent; when off, listing members answers 403
// with code 50001 Missing Access, as Discord does. It is on by default.
func (s *Server) SetMembersIntent(enabled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.membersIntent = enabled
}

// SetAvatar serves body with contentType at the CDN path, e.g. "avatars/{user}/{hash}.png".
func (s *Server) SetAvatar(path, contentType string, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.avatars[strings.TrimPrefix(path, "/")] = avatar{
		contentType: contentType,
		body:        append([]byte(nil), body...),
	}
}

// RateLimitNext makes the next n API requests answer 429 with Discord's documented body and
// headers. A global limit sends Retry-After, X-RateLimit-Global and X-RateLimit-Scope only,
// like Discord's own example; a per-route one also sends the X-RateLimit-* bucket headers.
func (s *Server) RateLimitNext(n int, retryAfter float64, global bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits, s.limitAfter, s.limitGlobal = n, retryAfter, global
}

// FailNext makes the next n API requests answer status with a JSON error body.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures, s.failStatus = n, status
}

// SetGarbage makes the next n API requests answer 200 with an HTML page instead of JSON, as a
// misbehaving proxy would.
func (s *Server) SetGarbage(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.garbage = n
}

// Counts returns a copy of the request counters.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counts
	c.ByRoute = make(map[string]int, len(s.counts.ByRoute))
	for k, v := range s.counts.ByRoute {
		c.ByRoute[k] = v
	}
	return c
}

// ResetCounts sets every counter to zero.
func (s *Server) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts = Counts{ByRoute: map[string]int{}}
}

// api registers an API route under /api/{version} behind counting, the injected faults and
// the bot token check, in that order.
func (s *Server) api(mux *http.ServeMux, route string, h http.HandlerFunc) {
	method, path, _ := strings.Cut(route, " ")
	mux.HandleFunc(method+" /api/{version}"+path, func(w http.ResponseWriter, r *http.Request) {
		if v := r.PathValue("version"); v != "v9" && v != "v10" {
			s.unknownRoute(w, r)
			return
		}
		if s.inject(w, route) {
			return
		}
		if r.Header.Get("Authorization") != "Bot "+s.opts.Token {
			writeError(w, http.StatusUnauthorized, "401: Unauthorized", 0)
			return
		}
		h(w, r)
	})
}

// inject counts the request and answers it with an injected fault if one is pending.
func (s *Server) inject(w http.ResponseWriter, route string) bool {
	s.mu.Lock()
	s.counts.Total++
	s.counts.ByRoute[route]++

	var fault func()
	switch {
	case s.limits > 0:
		s.limits--
		s.counts.RateLimited++
		after, global := s.limitAfter, s.limitGlobal
		fault = func() { writeRateLimit(w, after, global) }
	case s.failures > 0:
		s.failures--
		status := s.failStatus
		fault = func() {
			writeError(w, status, fmt.Sprintf("%d: %s", status, http.StatusText(status)), 0)
		}
	case s.garbage > 0:
		s.garbage--
		fault = func() {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("<html><head><title>502 Bad Gateway</title></head>" +
				"<body><center><h1>502 Bad Gateway</h1></center></body></html>\n"))
		}
	}
	s.mu.Unlock()

	if fault == nil {
		return false
	}
	fault()
	return true
}

func (s *Server) unknownRoute(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.counts.Total++
	s.counts.ByRoute["unknown"]++
	s.mu.Unlock()
	writeError(w, http.StatusNotFound, "404: Not Found", 0)
}

// guildOK answers the error for a guild path parameter that is not the stub's guild.
func (s *Server) guildOK(w http.ResponseWriter, r *http.Request) bool {
	id := r.PathValue("guild")
	if !snowflake(id) {
		writeFormError(w, "guild_id", "NUMBER_TYPE_COERCE",
			fmt.Sprintf("Value %q is not snowflake.", id))
		return false
	}
	if id != s.opts.GuildID {
		writeError(w, http.StatusNotFound, "Unknown Guild", 10004)
		return false
	}
	return true
}

func (s *Server) getMember(w http.ResponseWriter, r *http.Request) {
	if !s.guildOK(w, r) {
		return
	}
	id := r.PathValue("user")
	if !snowflake(id) {
		writeFormError(w, "user_id", "NUMBER_TYPE_COERCE",
			fmt.Sprintf("Value %q is not snowflake.", id))
		return
	}

	s.mu.Lock()
	raw, ok := s.members[id]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Unknown Member", 10007)
		return
	}
	writeJSON(w, http.StatusOK, raw)
}

// listMembers pages like Discord: ascending user ID, after exclusive, limit 1 by default.
func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) {
	if !s.guildOK(w, r) {
		return
	}
	q := r.URL.Query()

	limit := 1
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			writeFormError(w, "limit", "NUMBER_TYPE_COERCE", fmt.Sprintf("Value %q is not int.", v))
			return
		case n < 1:
			writeFormError(w, "limit", "NUMBER_TYPE_MIN",
				"int value should be greater than or equal to 1.")
			return
		case n > 1000:
			writeFormError(w, "limit", "NUMBER_TYPE_MAX",
				"int value should be less than or equal to 1000.")
			return
		}
		limit = n
	}
	var after uint64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeFormError(w, "after", "NUMBER_TYPE_COERCE",
				fmt.Sprintf("Value %q is not snowflake.", v))
			return
		}
		after = n
	}

	s.mu.Lock()
	if !s.membersIntent {
		s.mu.Unlock()
		writeError(w, http.StatusForbidden, "Missing Access", 50001)
		return
	}
	type entry struct {
		id  uint64
		raw json.RawMessage
	}
	var page []entry
	for k, raw := range s.members {
		if id, err := strconv.ParseUint(k, 10, 64); err == nil && id > after {
			page = append(page, entry{id, raw})
		}
	}
	s.mu.Unlock()

	sort.Slice(page, func(i, j int) bool { return page[i].id < page[j].id })
	if len(page) > limit {
		page = page[:limit]
	}
	parts := make([][]byte, len(page))
	for i, e := range page {
		parts[i] = e.raw
	}
	writeJSON(w, http.StatusOK, joinArray(parts))
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request) {
	if !s.guildOK(w, r) {
		return
	}
	s.mu.Lock()
	body, err := json.Marshal(s.roles)
	s.mu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "500: Internal Server Error", 0)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// getGuild answers the guild object with every field Discord's schema marks required.
func (s *Server) getGuild(w http.ResponseWriter, r *http.Request) {
	if !s.guildOK(w, r) {
		return
	}
	s.mu.Lock()
	roles := append([]Role(nil), s.roles...)
	s.mu.Unlock()

	g := map[string]any{
		"id":                            s.opts.GuildID,
		"name":                          s.opts.GuildName,
		"icon":                          nil,
		"description":                   nil,
		"home_header":                   nil,
		"splash":                        nil,
		"discovery_splash":              nil,
		"features":                      []string{},
		"banner":                        nil,
		"owner_id":                      ownerID,
		"application_id":                nil,
		"region":                        "deprecated",
		"afk_channel_id":                nil,
		"afk_timeout":                   300,
		"system_channel_id":             nil,
		"system_channel_flags":          0,
		"widget_enabled":                false,
		"widget_channel_id":             nil,
		"verification_level":            1,
		"roles":                         roles,
		"default_message_notifications": 1,
		"mfa_level":                     0,
		"explicit_content_filter":       2,
		"max_presences":                 nil,
		"max_members":                   500000,
		"max_stage_video_channel_users": 50,
		"max_video_channel_users":       25,
		"vanity_url_code":               nil,
		"premium_tier":                  0,
		"premium_subscription_count":    0,
		"preferred_locale":              "en-US",
		"rules_channel_id":              nil,
		"safety_alerts_channel_id":      nil,
		"public_updates_channel_id":     nil,
		"premium_progress_bar_enabled":  false,
		"nsfw":                          false,
		"nsfw_level":                    0,
		"emojis":                        []any{},
		"stickers":                      []any{},
		"incidents_data":                nil,
	}
	body, err := json.Marshal(g)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "500: Internal Server Error", 0)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// getBotUser answers the bot's own user, as GET /users/@me does for a bot token.
func (s *Server) getBotUser(w http.ResponseWriter, _ *http.Request) {
	u := map[string]any{
		"id":                     s.opts.BotUserID,
		"username":               "bridge-bot",
		"avatar":                 nil,
		"discriminator":          "4821",
		"public_flags":           0,
		"flags":                  0,
		"bot":                    true,
		"banner":                 nil,
		"accent_color":           nil,
		"global_name":            nil,
		"avatar_decoration_data": nil,
		"collectibles":           nil,
		"primary_guild":          nil,
		"mfa_enabled":            true,
		"locale":                 "en-US",
		"premium_type":           0,
		"email":                  nil,
		"verified":               true,
	}
	body, _ := json.Marshal(u) // strings, numbers, bools and nils always marshal
	writeJSON(w, http.StatusOK, body)
}

// cdn serves avatars. Like Discord's CDN it refuses a size that is not a power of two from 16
// to 4096; unlike it, it never resizes.
func (s *Server) cdn(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.counts.Total++
	s.counts.ByRoute["GET /cdn/{path...}"]++
	a, ok := s.avatars[r.PathValue("path")]
	s.mu.Unlock()

	if v := r.URL.Query().Get("size"); v != "" && !validSize(v) {
		http.Error(w, "400: Bad Request", http.StatusBadRequest)
		return
	}
	if !ok {
		http.Error(w, "404: Not Found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(a.body)))
	_, _ = w.Write(a.body)
}

func validSize(v string) bool {
	n, err := strconv.Atoi(v)
	return err == nil && n >= 16 && n <= 4096 && n&(n-1) == 0
}

func writeRateLimit(w http.ResponseWriter, retryAfter float64, global bool) {
	h := w.Header()
	h.Set("Retry-After", strconv.Itoa(int(math.Ceil(retryAfter))))
	if global {
		h.Set("X-RateLimit-Global", "true")
		h.Set("X-RateLimit-Scope", "global")
	} else {
		resetAt := float64(time.Now().UnixMilli())/1000 + retryAfter
		h.Set("X-RateLimit-Limit", "5")
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Reset", strconv.FormatFloat(resetAt, 'f', 3, 64))
		h.Set("X-RateLimit-Reset-After", strconv.FormatFloat(retryAfter, 'f', 3, 64))
		h.Set("X-RateLimit-Bucket", "d7f1b5cdb9c34f1b8f4f0e6f3a9c2e11")
		h.Set("X-RateLimit-Scope", "user")
	}
	writeJSON(w, http.StatusTooManyRequests, rateLimitBody(global, retryAfter))
}

func writeError(w http.ResponseWriter, status int, message string, code int) {
	body, _ := json.Marshal(map[string]any{"message": message, "code": code})
	writeJSON(w, status, body)
}

// writeFormError answers Discord's 50035 Invalid Form Body for one field.
func writeFormError(w http.ResponseWriter, field, code, message string) {
	body, _ := json.Marshal(map[string]any{
		"message": "Invalid Form Body",
		"code":    50035,
		"errors": map[string]any{
			field: map[string]any{
				"_errors": []map[string]string{{"code": code, "message": message}},
			},
		},
	})
	writeJSON(w, http.StatusBadRequest, body)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func joinArray(parts [][]byte) []byte {
	out := []byte{'['}
	for i, p := range parts {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, p...)
	}
	return append(out, ']')
}

// everyone is the @everyone role Discord gives every guild, with its default permissions.
func everyone(guildID string) Role {
	return Role{
		ID:          guildID,
		Name:        "@everyone",
		Permissions: "2248473465835073",
	}
}

func snowflake(s string) bool {
	if len(s) == 0 || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
