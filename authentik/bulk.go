package authentik

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/discord-authentik-bridge/bridge/groupmatch"
)

// GroupMembers is a group with the pks of its direct members.
type GroupMembers struct {
	groupmatch.Group
	Members []int32
	// Owned holds, per member pk, the raw attributes.discord value Authentik sent along with
	// the member; a full pass uses it to tell that a user is current without reading it.
	Owned map[int32]json.RawMessage
}

// membersPageSize is one because one group of a large guild carries every member's pk, and
// Authentik adds a partial user object per member: a group of 15,000 members is 7 MB of JSON.
// A page per group keeps the bridge's memory at the size of the largest group.
const membersPageSize = 1

// GroupsWithMembers hands every group with its attributes and member pks to visit, one at a
// time, for a full pass: it gives every linked user's managed memberships without reading
// users one by one, and the caller keeps only what it needs of each page. The body is decoded
// directly; the generated model would decode each member's object three times.
func (c *Client) GroupsWithMembers(ctx context.Context, visit func(GroupMembers) error) error {
	for page := int32(1); ; {
		op := fmt.Sprintf("list groups with members, page %d", page)
		q := url.Values{
			"include_users": {"true"},
			"page":          {strconv.Itoa(int(page))},
			"page_size":     {strconv.Itoa(membersPageSize)},
		}
		var raw struct {
			Pagination pagination `json:"pagination"`
			Results    []struct {
				groupJSON
				Users    []int32 `json:"users"`
				UsersObj []struct {
					PK         int32 `json:"pk"`
					Attributes struct {
						Discord json.RawMessage `json:"discord"`
					} `json:"attributes"`
				} `json:"users_obj"`
			} `json:"results"`
		}
		err := retryRead(ctx, func() error {
			raw.Results = nil
			return c.getJSON(ctx, op, "/core/groups/?"+q.Encode(), &raw)
		})
		if err != nil {
			return err
		}
		for _, g := range raw.Results {
			gm := GroupMembers{
				Group:   g.group(),
				Members: g.Users,
				Owned:   map[int32]json.RawMessage{},
			}
			for _, u := range g.UsersObj {
				if u.Attributes.Discord != nil {
					gm.Owned[u.PK] = u.Attributes.Discord
				}
			}
			if err := visit(gm); err != nil {
				return err
			}
		}
		next, ok := raw.Pagination.nextPage(page)
		if !ok {
			return nil
		}
		page = next
	}
}

// SetActive activates or deactivates a user.
func (c *Client) SetActive(ctx context.Context, pk int32, active bool) error {
	return c.patchUser(ctx, pk, map[string]any{"is_active": active})
}

// Revoke ends the user's Authentik sessions and deletes the OAuth2 access and refresh tokens
// issued to them, so that apps must fetch fresh claims. It returns how many it removed.
func (c *Client) Revoke(ctx context.Context, pk int32, username string) (int, error) {
	n := 0
	sessions, err := c.listIDs(ctx, "/core/authenticated_sessions/", "uuid",
		url.Values{"user__username": {username}})
	if err != nil {
		return n, err
	}
	for _, id := range sessions {
		op := fmt.Sprintf("delete session %s of user %d", id, pk)
		path := "/core/authenticated_sessions/" + url.PathEscape(id) + "/"
		if _, err := c.do(ctx, op, http.MethodDelete, path, nil); err != nil && !isNotFound(err) {
			return n, err
		}
		n++
	}
	for _, kind := range []string{"access_tokens", "refresh_tokens"} {
		ids, err := c.listIDs(ctx, "/oauth2/"+kind+"/", "pk",
			url.Values{"user": {strconv.Itoa(int(pk))}})
		if err != nil {
			return n, err
		}
		for _, id := range ids {
			op := fmt.Sprintf("delete %s %s of user %d", kind, id, pk)
			if _, err := c.do(ctx, op, http.MethodDelete, "/oauth2/"+kind+"/"+id+"/", nil); err != nil && !isNotFound(err) {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// listIDs pages through a list endpoint and collects one identifying field of each result.
func (c *Client) listIDs(ctx context.Context, path, field string, q url.Values) ([]string, error) {
	var ids []string
	for page := int32(1); ; {
		op := fmt.Sprintf("list %s page %d", path, page)
		q.Set("page", strconv.Itoa(int(page)))
		q.Set("page_size", strconv.Itoa(pageSize))
		body, err := c.do(ctx, op, http.MethodGet, path+"?"+q.Encode(), nil)
		if err != nil {
			return nil, err
		}
		var raw struct {
			Pagination pagination                   `json:"pagination"`
			Results    []map[string]json.RawMessage `json:"results"`
		}
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, &Error{Op: op, Detail: "undecodable answer", Err: err}
		}
		for _, r := range raw.Results {
			var s string
			if json.Unmarshal(r[field], &s) != nil {
				s = string(r[field]) // numeric pks
			}
			ids = append(ids, s)
		}
		next, ok := raw.Pagination.nextPage(page)
		if !ok {
			return ids, nil
		}
		page = next
	}
}

func isNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// getJSON decodes a successful answer straight from the connection into v, without holding
// the whole body, for the large pages of a full pass.
func (c *Client) getJSON(ctx context.Context, op, path string, v any) error {
	cfg := c.api.GetConfig()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Servers[0].URL+path, nil)
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", cfg.UserAgent)
	for k, val := range cfg.DefaultHeader {
		req.Header.Set(k, val)
	}
	resp, err := cfg.HTTPClient.Do(req)
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		_, err := check(op, resp, nil)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return &Error{Op: op, Status: resp.StatusCode, Detail: "undecodable answer", Err: err}
	}
	return nil
}

// ErrFilterIgnored reports a user listing that answered with users the attributes filter
// should have left out. Authentik drops a filter it cannot evaluate and lists everyone
// instead, so a caller must not take such an answer for the users it asked for.
var ErrFilterIgnored = errors.New("authentik ignored the attributes filter")

// MaxUsersByDiscordIDs is the most Discord IDs one UsersByDiscordIDs call takes: the query
// stays short of the 4 KiB request lines some proxies still cap, and every match fits on one
// page.
const MaxUsersByDiscordIDs = 50

// UsersByDiscordIDs reads, in one request, the users whose attributes.discord.id (as the
// bridge writes it) is one of ids. It lets a full pass read the users it is about to write
// in batches, milliseconds before writing them, instead of one request per user. Users whose
// attribute is missing or differs are simply absent from the answer; the caller reads them
// one by one. The answer is checked here: a user outside ids means the filter was ignored.
func (c *Client) UsersByDiscordIDs(ctx context.Context, ids []string) (map[int32]*User, error) {
	if len(ids) == 0 {
		return map[int32]*User{}, nil
	}
	if len(ids) > MaxUsersByDiscordIDs {
		return nil, fmt.Errorf("authentik: %d Discord IDs in one read, at most %d", len(ids),
			MaxUsersByDiscordIDs)
	}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	// "discord__id__in" becomes the Django lookup attributes__discord__id__in, which Authentik
	// evaluates in the database.
	filter, err := json.Marshal(map[string][]string{"discord__id__in": ids})
	if err != nil {
		return nil, err
	}
	q := url.Values{
		"attributes":     {string(filter)},
		"include_groups": {"false"},
		"page_size":      {strconv.Itoa(pageSize)},
	}
	op := fmt.Sprintf("list users of %d Discord IDs", len(ids))
	var raw struct {
		Pagination pagination        `json:"pagination"`
		Results    []json.RawMessage `json:"results"`
	}
	err = retryRead(ctx, func() error {
		raw.Results = nil
		return c.getJSON(ctx, op, "/core/users/?"+q.Encode(), &raw)
	})
	if err != nil {
		return nil, err
	}
	if _, more := raw.Pagination.nextPage(1); more {
		return nil, fmt.Errorf("authentik: %s: more than one page of matches: %w", op,
			ErrFilterIgnored)
	}
	out := make(map[int32]*User, len(raw.Results))
	for _, body := range raw.Results {
		var head struct {
			PK int32 `json:"pk"`
		}
		if err := json.Unmarshal(body, &head); err != nil {
			return nil, &Error{Op: op, Detail: "undecodable answer", Err: err}
		}
		u, err := decodeUser(op, head.PK, body)
		if err != nil {
			return nil, err
		}
		d, ok := storedDiscordID(u)
		if !ok || !want[d] {
			return nil, fmt.Errorf("authentik: %s: user %d is not one of them: %w", op, u.PK,
				ErrFilterIgnored)
		}
		out[u.PK] = u
	}
	return out, nil
}

// storedDiscordID returns attributes.discord.id when it is a string, as the bridge writes it.
func storedDiscordID(u *User) (string, bool) {
	var d struct {
		ID *string `json:"id"`
	}
	if json.Unmarshal(u.Attributes["discord"], &d) != nil || d.ID == nil {
		return "", false
	}
	return *d.ID, true
}
