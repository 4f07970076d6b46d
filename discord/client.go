// Package discord is the bridge's line to Discord: over REST it asks for guild members, member
// pages, roles, the guild and the bot user with the bot token, bounds every call by its context
// and sorts failures into retryable and final ones; over the gateway (gateway.go) it keeps a
// session that turns member and role events into work.
//
// REST requests go through discordgo's request machinery, so its per-route rate-limit buckets
// apply, but URLs are built from the client's own base URL. discordgo's Endpoint* variables are
// process-global; only the gateway sets them, because discordgo asks them for the socket's
// address (SetDiscordgoEndpoints). discordgo would sleep through a 429 without looking at the
// context, retry a 502 on its own and panic on some odd bodies in its higher-level methods; this
// client turns those off and does the waiting, retrying and decoding itself.
package discord

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"
)

// DefaultAPIURL is Discord's REST API, version 10.
const DefaultAPIURL = "https://discord.com/api/v10"

// defaultUserAgent follows the "DiscordBot (url, version)" form Discord asks bots to send.
const defaultUserAgent = "DiscordBot (https://github.com/discord-authentik-bridge/bridge, 1)"

const (
	// maxAttempts bounds the requests one call makes, whatever Discord answers.
	maxAttempts = 4

	// serverRetries is how often a 5xx is retried within one call; further retries belong to
	// the caller's queue, which backs off.
	serverRetries = 1
	serverBackoff = 200 * time.Millisecond

	// maxWait caps a wait inside one call even when the context has no deadline, so that a
	// long shared-bucket 429 becomes a retryable error instead of a stuck call.
	maxWait = 30 * time.Second

	// defaultHTTPTimeout applies when the caller brings no http.Client; the context usually
	// ends a request much earlier.
	defaultHTTPTimeout = 30 * time.Second
)

// Options configure a Client.
type Options struct {
	Token      string       // bot token, with or without the "Bot " prefix
	APIURL     string       // REST base URL; DefaultAPIURL when empty
	HTTPClient *http.Client // copied, never modified; a client with a 30 s timeout when nil
	Logger     *slog.Logger // discards when nil
	UserAgent  string       // defaults to a DiscordBot user agent naming the bridge
}

// Client calls Discord's REST API with a bot token. It is safe for concurrent use.
type Client struct {
	s    *discordgo.Session
	base string
	log  *slog.Logger

	globalUntil atomic.Int64 // unix nanoseconds until which a global 429 holds every call

	calls         atomic.Int64
	rateLimited   atomic.Int64
	rateLimitWait atomic.Int64 // nanoseconds
}

// Stats are counters since the client was made.
type Stats struct {
	Calls         int64         // HTTP requests sent to Discord, retries included
	RateLimited   int64         // 429 answers received
	RateLimitWait time.Duration // time spent waiting for rate limits to pass
}

// NewClient checks the options and prepares a client. It makes no network call; BotUser proves
// the token.
func NewClient(o Options) (*Client, error) {
	fields := strings.Fields(o.Token)
	if len(fields) > 0 && fields[0] == "Bot" {
		fields = fields[1:]
	}
	if len(fields) != 1 {
		return nil, errors.New("discord: bot token is empty or has spaces")
	}
	token := fields[0]

	base := o.APIURL
	if base == "" {
		base = DefaultAPIURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("discord: api url %q is not an http(s) url", base)
	}

	s, err := discordgo.New("Bot " + token)
	if err != nil {
		return nil, fmt.Errorf("discord: new session: %w", err)
	}

	c := &Client{s: s, base: strings.TrimRight(base, "/"), log: o.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}

	hc := &http.Client{Timeout: defaultHTTPTimeout}
	if o.HTTPClient != nil {
		copied := *o.HTTPClient
		hc = &copied
	}
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	hc.Transport = &observer{next: next, calls: &c.calls}

	s.Client = hc
	s.UserAgent = o.UserAgent
	if s.UserAgent == "" {
		s.UserAgent = defaultUserAgent
	}
	s.ShouldRetryOnRateLimit = false
	s.MaxRestRetries = 0
	// discordgo prints through the standard logger; its messages are all turned into errors
	// here, so silence it (LogError is 0).
	s.LogLevel = -1
	return c, nil
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Calls:         c.calls.Load(),
		RateLimited:   c.rateLimited.Load(),
		RateLimitWait: time.Duration(c.rateLimitWait.Load()),
	}
}

// Member fetches one member of a guild. A user who is not a member gives an error wrapping
// ErrNotMember. The returned member has GuildID set, which Discord's body leaves out.
func (c *Client) Member(ctx context.Context, guildID, userID string) (*discordgo.Member, error) {
	const op = "get member"
	if err := checkIDs(op, guildID, userID); err != nil {
		return nil, err
	}

	// Discord's bucket for this route is per guild, but discordgo holds a bucket's lock for
	// the whole request, which would let only one login at a time ask Discord. The guild's
	// bucket is therefore split into a few lanes by user: they run side by side, each
	// keeping its own view of the limit, and a 429 the lanes provoke together is waited out
	// like any other. A lane per user would leak, as discordgo never forgets a bucket.
	bucket := c.base + "/guilds/" + guildID + "/members/"
	lane := bucket + "#" + strconv.Itoa(memberLane(userID))
	m, err := getJSON[*discordgo.Member](ctx, c, op, bucket+userID, lane)
	if err != nil {
		return nil, err
	}
	if m.User == nil || m.User.ID != userID {
		return nil, malformed(op, "member without the requested user")
	}
	m.GuildID = guildID
	return m, nil
}

// memberLanes is how many member lookups of one guild may be in flight at once.
const memberLanes = 8

func memberLane(userID string) int {
	h := fnv.New32a()
	h.Write([]byte(userID))
	return int(h.Sum32() % memberLanes)
}

// MembersPage lists up to limit (1 to 1000) members whose user ID is greater than after, in
// ascending ID order; after "" starts at the beginning. A page shorter than limit is the last.
// Discord answers 403 with code 50001 when the bot lacks the Server Members intent.
func (c *Client) MembersPage(
	ctx context.Context, guildID, after string, limit int,
) ([]*discordgo.Member, error) {
	const op = "list members"
	if err := checkIDs(op, guildID); err != nil {
		return nil, err
	}
	if after != "" {
		if err := checkIDs(op, after); err != nil {
			return nil, err
		}
	}
	if limit < 1 || limit > 1000 {
		return nil, &Error{Op: op, Err: fmt.Errorf("limit %d outside 1..1000", limit)}
	}

	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if after != "" {
		q.Set("after", after)
	}
	bucket := c.base + "/guilds/" + guildID + "/members"
	page, err := getJSON[[]*discordgo.Member](ctx, c, op, bucket+"?"+q.Encode(), bucket)
	if err != nil {
		return nil, err
	}
	for _, m := range page {
		if m == nil || m.User == nil || m.User.ID == "" {
			return nil, malformed(op, "member without user")
		}
		m.GuildID = guildID
	}
	return page, nil
}

// Roles lists every role of the guild, @everyone (whose ID is the guild ID) included.
func (c *Client) Roles(ctx context.Context, guildID string) ([]*discordgo.Role, error) {
	const op = "list roles"
	if err := checkIDs(op, guildID); err != nil {
		return nil, err
	}

	u := c.base + "/guilds/" + guildID + "/roles"
	roles, err := getJSON[[]*discordgo.Role](ctx, c, op, u, u)
	if err != nil {
		return nil, err
	}
	for _, r := range roles {
		if r == nil || r.ID == "" {
			return nil, malformed(op, "role without id")
		}
	}
	return roles, nil
}

// Guild fetches the guild itself, which proves the bot was added to it.
func (c *Client) Guild(ctx context.Context, guildID string) (*discordgo.Guild, error) {
	const op = "get guild"
	if err := checkIDs(op, guildID); err != nil {
		return nil, err
	}

	u := c.base + "/guilds/" + guildID
	g, err := getJSON[*discordgo.Guild](ctx, c, op, u, u)
	if err != nil {
		return nil, err
	}
	if g.ID != guildID {
		return nil, malformed(op, "guild with another id")
	}
	return g, nil
}

// BotUser fetches the user the token belongs to, which proves the token.
func (c *Client) BotUser(ctx context.Context) (*discordgo.User, error) {
	const op = "get bot user"
	u := c.base + "/users/@me"
	user, err := getJSON[*discordgo.User](ctx, c, op, u, u)
	if err != nil {
		return nil, err
	}
	if user.ID == "" {
		return nil, malformed(op, "user without id")
	}
	return user, nil
}

// DisplayName is the name Discord shows for the member's account: the global display name,
// else the username. The guild nickname is not used. It returns "" for a member without user.
func DisplayName(m *discordgo.Member) string {
	if m == nil || m.User == nil {
		return ""
	}
	if m.User.GlobalName != "" {
		return m.User.GlobalName
	}
	return m.User.Username
}

// getJSON makes a GET call and decodes a JSON body that must not be null.
func getJSON[T any](ctx context.Context, c *Client, op, rawURL, bucket string) (T, error) {
	var v T
	body, err := c.get(ctx, op, rawURL, bucket)
	if err != nil {
		return v, err
	}

	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return v, malformed(op, "empty or null body")
	}
	if err := json.Unmarshal(trimmed, &v); err != nil {
		e := malformed(op, "not the expected json")
		e.Err = fmt.Errorf("%w: %w", errMalformed, err)
		return v, e
	}
	return v, nil
}

// malformed is the error for a 200 whose body cannot be what was asked for. Retrying is
// reasonable: such answers come from proxies and outages, not from the request.
func malformed(op, why string) *Error {
	return &Error{
		Op:        op,
		Status:    http.StatusOK,
		Retryable: true,
		Err:       fmt.Errorf("%w: %s", errMalformed, why),
	}
}

// checkIDs refuses anything that is not a snowflake before it reaches a URL.
func checkIDs(op string, ids ...string) error {
	for _, id := range ids {
		if !validSnowflake(id) {
			shown := id
			if len(shown) > 24 {
				shown = shown[:24] + "…"
			}
			return &Error{Op: op, Err: fmt.Errorf("%w: %q", ErrInvalidID, shown)}
		}
	}
	return nil
}

// validSnowflake reports whether s is 1 to 20 ASCII digits, the form of a 64-bit Discord ID.
func validSnowflake(s string) bool {
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
