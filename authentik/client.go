// Package authentik is the bridge's view of Authentik's REST API: which users are linked to a
// Discord account, which groups exist, group membership, and the user attributes the bridge
// owns. It wraps the generated client goauthentik.io/api/v3 and papers over the two traps that
// client sets: attributes decoded through float64, and PATCH replacing attributes wholesale.
package authentik

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	api "goauthentik.io/api/v3"

	"github.com/discord-authentik-bridge/bridge/groupmatch"
)

// pageSize is the largest page Authentik serves; asking for more is silently capped.
const pageSize = 100

// OwnedKeys are the attribute keys the bridge writes. Every other key of a user's attributes
// belongs to someone else and is written back exactly as it was read.
var OwnedKeys = []string{"avatar", "discord"}

// ErrNotFound reports that a user or group does not exist or is not visible to the token.
var ErrNotFound = errors.New("not found")

// Error is a failed call to Authentik.
type Error struct {
	Op     string // what the bridge was doing, e.g. "get user 42"
	Status int    // HTTP status, 0 when no answer arrived
	Detail string // short excerpt of the answer
	Err    error  // transport error, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("authentik: ")
	b.WriteString(e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": status %d", e.Status)
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error {
	if e.Status == http.StatusNotFound {
		return ErrNotFound
	}
	return e.Err
}

// Retryable reports whether the same call may succeed later: no answer at all, a rate limit
// or a server-side failure. A 4xx other than 429 means the request itself is wrong.
func (e *Error) Retryable() bool {
	return e.Status == 0 || e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// IsRetryable reports whether err is an Authentik failure that may pass on a later try.
func IsRetryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Retryable()
}

// Options configure a Client.
type Options struct {
	URL        string // base URL of Authentik, without /api/v3
	Token      string // API token with intent "api"
	SourceSlug string // slug of the Discord OAuth source
	HTTPClient *http.Client
	UserAgent  string
}

// Client talks to one Authentik instance.
type Client struct {
	api  *api.APIClient
	slug string
}

// New returns a Client for o. It makes no request.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("authentik url %q: must be an absolute http(s) URL", o.URL)
	}
	cfg := api.NewConfiguration()
	cfg.Servers = api.ServerConfigurations{{URL: strings.TrimRight(o.URL, "/") + "/api/v3"}}
	cfg.HTTPClient = o.HTTPClient
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	cfg.UserAgent = o.UserAgent
	cfg.AddDefaultHeader("Authorization", "Bearer "+o.Token)
	return &Client{api: api.NewAPIClient(cfg), slug: o.SourceSlug}, nil
}

// User is the part of an Authentik user the bridge reads and writes.
type User struct {
	PK       int32
	Username string
	Name     string
	IsActive bool
	Groups   []string // uuids of every group the user is a direct member of

	// Attributes holds each top-level attribute as the raw JSON Authentik sent, so values the
	// bridge does not own can be written back byte for byte.
	Attributes map[string]json.RawMessage
}

// User fetches one user by primary key. It is the read of every login, so it skips the
// generated model: that decodes the body three times over (30 % of the bridge's CPU under load,
// measured with BenchmarkSyncHook) into attributes the bridge cannot use, as they went through
// float64. The request is the one the generated client would send.
func (c *Client) User(ctx context.Context, pk int32) (*User, error) {
	op := fmt.Sprintf("get user %d", pk)
	var body []byte
	err := retryRead(ctx, func() (err error) {
		body, err = c.do(ctx, op, http.MethodGet, fmt.Sprintf("/core/users/%d/", pk), nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	return decodeUser(op, pk, body)
}

// decodeUser reads a user from the raw answer rather than from the generated model, whose
// attributes went through float64 and may already have lost digits.
func decodeUser(op string, pk int32, body []byte) (*User, error) {
	var raw struct {
		PK         int32                      `json:"pk"`
		Username   string                     `json:"username"`
		Name       string                     `json:"name"`
		IsActive   *bool                      `json:"is_active"`
		Groups     []string                   `json:"groups"`
		Attributes map[string]json.RawMessage `json:"attributes"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, &Error{Op: op, Detail: "undecodable answer", Err: err}
	}
	// A user without attributes or groups is not a whole answer: writing back what it lacks
	// would wipe what Authentik holds. Real answers always carry both, even empty.
	if raw.Attributes == nil || raw.Groups == nil || raw.PK != pk {
		return nil, &Error{Op: op, Detail: "incomplete answer (pk, groups or attributes missing)"}
	}
	u := &User{
		PK:         raw.PK,
		Username:   raw.Username,
		Name:       raw.Name,
		IsActive:   raw.IsActive == nil || *raw.IsActive,
		Groups:     raw.Groups,
		Attributes: raw.Attributes,
	}
	return u, nil
}

// Connection links an Authentik user to an identifier at the Discord source.
type Connection struct {
	UserPK     int32
	Identifier string // the Discord user ID
}

// UsersByDiscordID returns the pks of every user whose Discord source connection carries
// exactly discordID. Authentik cannot filter by identifier, only search substrings, so the
// match is made here, over every page.
func (c *Client) UsersByDiscordID(ctx context.Context, discordID string) ([]int32, error) {
	conns, err := c.connections(ctx, discordID)
	if err != nil {
		return nil, err
	}
	var pks []int32
	for _, cn := range conns {
		if cn.Identifier == discordID {
			pks = append(pks, cn.UserPK)
		}
	}
	return pks, nil
}

// Connections lists every connection of the Discord source.
func (c *Client) Connections(ctx context.Context) ([]Connection, error) {
	return c.connections(ctx, "")
}

func (c *Client) connections(ctx context.Context, search string) ([]Connection, error) {
	var out []Connection
	for page := int32(1); ; {
		op := fmt.Sprintf("list connections of source %q, page %d", c.slug, page)
		q := url.Values{
			"source__slug": {c.slug},
			"page":         {strconv.Itoa(int(page))},
			"page_size":    {strconv.Itoa(pageSize)},
		}
		if search != "" {
			q.Set("search", search)
		}
		// Decoded directly: a full pass reads a page per hundred users, and the generated
		// model would decode each one three times, with its source object.
		var raw struct {
			Pagination pagination `json:"pagination"`
			Results    []struct {
				User       int32  `json:"user"`
				Identifier string `json:"identifier"`
			} `json:"results"`
		}
		err := retryRead(ctx, func() error {
			raw.Results = nil
			return c.getJSON(ctx, op, "/sources/user_connections/oauth/?"+q.Encode(), &raw)
		})
		if err != nil {
			return nil, err
		}
		for _, r := range raw.Results {
			out = append(out, Connection{UserPK: r.User, Identifier: r.Identifier})
		}
		next, ok := raw.Pagination.nextPage(page)
		if !ok {
			return out, nil
		}
		page = next
	}
}

// pagination is the part of Authentik's pagination object the bridge follows.
type pagination struct {
	Next json.Number `json:"next"`
}

// nextPage returns the page after cur, or false on the last page, where Authentik sets next
// to 0. A next that does not move forward is taken as the end rather than looped on.
func (p pagination) nextPage(cur int32) (int32, bool) {
	n, err := p.Next.Int64()
	if err != nil || n <= int64(cur) {
		return 0, false
	}
	return int32(n), true
}

// Groups lists every group with its raw attributes, without member lists, which the bridge
// reads from users instead and which would make every page heavy.
func (c *Client) Groups(ctx context.Context) ([]groupmatch.Group, error) {
	var out []groupmatch.Group
	for page := int32(1); ; {
		op := fmt.Sprintf("list groups, page %d", page)
		var body []byte
		err := retryRead(ctx, func() error {
			_, resp, err := c.api.CoreAPI.CoreGroupsList(ctx).
				IncludeUsers(false).Page(page).PageSize(pageSize).Execute()
			body, err = check(op, resp, err)
			return err
		})
		if err != nil {
			return nil, err
		}
		var raw struct {
			Pagination pagination  `json:"pagination"`
			Results    []groupJSON `json:"results"`
		}
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, &Error{Op: op, Detail: "undecodable answer", Err: err}
		}
		for _, g := range raw.Results {
			out = append(out, g.group())
		}
		next, ok := raw.Pagination.nextPage(page)
		if !ok {
			return out, nil
		}
		page = next
	}
}

// groupJSON is the part of a group in Authentik's answers that the mapping needs.
type groupJSON struct {
	PK          string          `json:"pk"`
	Name        string          `json:"name"`
	IsSuperuser bool            `json:"is_superuser"`
	Parents     []string        `json:"parents"`
	Attributes  json.RawMessage `json:"attributes"`
}

func (g groupJSON) group() groupmatch.Group {
	return groupmatch.Group{UUID: g.PK, Name: g.Name, IsSuperuser: g.IsSuperuser,
		Parents: g.Parents, Attributes: g.Attributes}
}

// AddToGroup makes the user a member of the group. Authentik treats a repeat as success.
func (c *Client) AddToGroup(ctx context.Context, groupUUID string, pk int32) error {
	op := fmt.Sprintf("add user %d to group %s", pk, groupUUID)
	resp, err := c.api.CoreAPI.CoreGroupsAddUserCreate(ctx, groupUUID).
		UserAccountRequest(api.UserAccountRequest{Pk: pk}).Execute()
	_, err = check(op, resp, err)
	return err
}

// RemoveFromGroup ends the user's membership of the group.
func (c *Client) RemoveFromGroup(ctx context.Context, groupUUID string, pk int32) error {
	op := fmt.Sprintf("remove user %d from group %s", pk, groupUUID)
	resp, err := c.api.CoreAPI.CoreGroupsRemoveUserCreate(ctx, groupUUID).
		UserAccountRequest(api.UserAccountRequest{Pk: pk}).Execute()
	_, err = check(op, resp, err)
	return err
}

// Update describes a change to one user. Nil fields are left alone.
type Update struct {
	// Attributes maps owned keys to their new JSON values. Keys outside OwnedKeys are refused.
	Attributes map[string]json.RawMessage
	Name       *string
	// Base, when set, holds the user's attributes as read moments ago by the same sync; the
	// other keys are taken from it instead of reading the user again.
	Base map[string]json.RawMessage
}

// UpdateUser applies u with a read-modify-write: it takes the user's attributes (u.Base, or a
// fresh read), sets only the owned keys in u, and sends every other key back exactly as read.
// Authentik has no ETag, so a writer racing between the read and the PATCH can still lose; a
// sync reads the user milliseconds before it writes, which keeps that window as short as the
// API allows.
func (c *Client) UpdateUser(ctx context.Context, pk int32, u Update) error {
	if len(u.Attributes) == 0 && u.Name == nil {
		return nil
	}
	for k := range u.Attributes {
		if !owned(k) {
			return fmt.Errorf("authentik: refusing to write attribute %q the bridge does not own", k)
		}
	}
	body := map[string]any{}
	if len(u.Attributes) > 0 {
		base := u.Base
		if base == nil {
			cur, err := c.User(ctx, pk)
			if err != nil {
				return err
			}
			base = cur.Attributes
		}
		merged := make(map[string]json.RawMessage, len(base)+len(u.Attributes))
		for k, v := range base {
			merged[k] = v
		}
		for k, v := range u.Attributes {
			merged[k] = v
		}
		body["attributes"] = merged
	}
	if u.Name != nil {
		body["name"] = *u.Name
	}
	return c.patchUser(ctx, pk, body)
}

// patchUser sends a PATCH of the user. It encodes the body itself rather than through the
// generated PatchedUserRequest: encoding/json would escape <, > and & inside attribute values
// it merely passes on, and the bridge promises to write those values back byte for byte.
func (c *Client) patchUser(ctx context.Context, pk int32, body map[string]any) error {
	op := fmt.Sprintf("update user %d", pk)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		return &Error{Op: op, Err: err}
	}
	_, err := c.do(ctx, op, http.MethodPatch, fmt.Sprintf("/core/users/%d/", pk), &buf)
	return err
}

// do sends one request with the generated client's configuration (base URL, token, user
// agent, HTTP client) and returns the body of a successful answer.
func (c *Client) do(ctx context.Context, op, method, path string, body io.Reader) ([]byte, error) {
	cfg := c.api.GetConfig()
	req, err := http.NewRequestWithContext(ctx, method, cfg.Servers[0].URL+path, body)
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", cfg.UserAgent)
	for k, v := range cfg.DefaultHeader {
		req.Header.Set(k, v)
	}
	resp, err := cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	defer resp.Body.Close()
	return check(op, resp, nil)
}

func owned(key string) bool {
	for _, k := range OwnedKeys {
		if k == key {
			return true
		}
	}
	return false
}

// Me returns the username of the token's owner; it proves the token is accepted.
func (c *Client) Me(ctx context.Context) (string, error) {
	op := "get token owner"
	_, resp, err := c.api.CoreAPI.CoreUsersMeRetrieve(ctx).Execute()
	body, err := check(op, resp, err)
	if err != nil {
		return "", err
	}
	var me struct {
		User struct {
			Username string `json:"username"`
		} `json:"user"`
	}
	if err := json.Unmarshal(body, &me); err != nil {
		return "", &Error{Op: op, Detail: "undecodable answer", Err: err}
	}
	return me.User.Username, nil
}

// Source checks that the Discord OAuth source exists and returns its name.
func (c *Client) Source(ctx context.Context) (string, error) {
	op := fmt.Sprintf("get source %q", c.slug)
	_, resp, err := c.api.SourcesAPI.SourcesOauthRetrieve(ctx, c.slug).Execute()
	body, err := check(op, resp, err)
	if err != nil {
		return "", err
	}
	var src struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(body, &src); err != nil {
		return "", &Error{Op: op, Detail: "undecodable answer", Err: err}
	}
	return src.Name, nil
}

// check turns the generated client's results into the raw body or an *Error. A decoding error
// of the generated model is ignored when the status is fine: the bridge decodes the raw body
// itself, and a field the model insists on should not fail a read the bridge does not need.
func check(op string, resp *http.Response, err error) ([]byte, error) {
	if resp == nil {
		if err == nil {
			err = errors.New("no response")
		}
		return nil, &Error{Op: op, Err: err}
	}
	body, readErr := readBody(resp)
	if resp.StatusCode >= 300 {
		return nil, &Error{Op: op, Status: resp.StatusCode, Detail: excerpt(body)}
	}
	if readErr != nil {
		return nil, &Error{Op: op, Status: resp.StatusCode, Err: readErr}
	}
	if err != nil && !isDecodeError(err) {
		return nil, &Error{Op: op, Status: resp.StatusCode, Err: err}
	}
	return body, nil
}

func isDecodeError(err error) bool {
	var ge *api.GenericOpenAPIError
	if errors.As(err, &ge) {
		return true
	}
	var gv api.GenericOpenAPIError
	return errors.As(err, &gv)
}

// readBody returns the body the generated client already buffered.
func readBody(resp *http.Response) ([]byte, error) {
	if resp.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b, err
}

// excerpt keeps an error answer short enough for a log line and free of markup noise.
func excerpt(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
