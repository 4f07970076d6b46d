package authentikstub

import (
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// route is one operation the stub serves; template is the schema's path with the server prefix.
type route struct {
	method   string
	template string
	segs     []string
	handle   func(*Server, *call) reply
}

// routes lists literal paths before templated ones that could also match them (users/me/ before
// users/{id}/), as Django's URL resolver tries them in that order.
var routes = buildRoutes([]route{
	{method: "GET", template: "/api/v3/core/users/", handle: (*Server).listUsers},
	{method: "GET", template: "/api/v3/core/users/me/", handle: (*Server).me},
	{method: "GET", template: "/api/v3/core/users/{id}/", handle: (*Server).getUser},
	{method: "PATCH", template: "/api/v3/core/users/{id}/", handle: (*Server).patchUser},
	{method: "PUT", template: "/api/v3/core/users/{id}/", handle: (*Server).putUser},
	{method: "GET", template: "/api/v3/core/groups/", handle: (*Server).listGroups},
	{method: "GET", template: "/api/v3/core/groups/{group_uuid}/", handle: (*Server).getGroup},
	{
		method: "POST", template: "/api/v3/core/groups/{group_uuid}/add_user/",
		handle: (*Server).addUserToGroup,
	},
	{
		method: "POST", template: "/api/v3/core/groups/{group_uuid}/remove_user/",
		handle: (*Server).removeUserFromGroup,
	},
	{method: "GET", template: "/api/v3/sources/oauth/{slug}/", handle: (*Server).getOAuthSource},
	{
		method: "GET", template: "/api/v3/sources/user_connections/oauth/",
		handle: (*Server).listConnections,
	},
	{
		method: "GET", template: "/api/v3/core/authenticated_sessions/",
		handle: (*Server).listSessions,
	},
	{
		method: "GET", template: "/api/v3/core/authenticated_sessions/{uuid}/",
		handle: (*Server).getSession,
	},
	{
		method: "DELETE", template: "/api/v3/core/authenticated_sessions/{uuid}/",
		handle: (*Server).deleteSession,
	},
	{method: "GET", template: "/api/v3/oauth2/access_tokens/", handle: accessTokens.list},
	{method: "GET", template: "/api/v3/oauth2/access_tokens/{id}/", handle: accessTokens.get},
	{method: "DELETE", template: "/api/v3/oauth2/access_tokens/{id}/", handle: accessTokens.del},
	{method: "GET", template: "/api/v3/oauth2/refresh_tokens/", handle: refreshTokens.list},
	{method: "GET", template: "/api/v3/oauth2/refresh_tokens/{id}/", handle: refreshTokens.get},
	{
		method: "DELETE", template: "/api/v3/oauth2/refresh_tokens/{id}/",
		handle: refreshTokens.del,
	},
})

func buildRoutes(rs []route) []route {
	for i := range rs {
		rs[i].segs = strings.Split(strings.Trim(rs[i].template, "/"), "/")
	}
	return rs
}

// match finds the route for a request. pathKnown reports a path that is served for some other
// method, which Authentik answers with 405.
func match(method, path string) (rt *route, params map[string]string, pathKnown bool) {
	// Every Authentik API path ends in a slash; without it Django redirects or refuses.
	if !strings.HasSuffix(path, "/") {
		return nil, nil, false
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i := range routes {
		p, ok := matchSegs(routes[i].segs, segs)
		if !ok {
			continue
		}
		if routes[i].method == method {
			return &routes[i], p, true
		}
		pathKnown = true
	}
	return nil, nil, pathKnown
}

func matchSegs(tmpl, segs []string) (map[string]string, bool) {
	if len(tmpl) != len(segs) {
		return nil, false
	}
	params := map[string]string{}
	for i, t := range tmpl {
		if strings.HasPrefix(t, "{") {
			if segs[i] == "" {
				return nil, false
			}
			params[strings.Trim(t, "{}")] = segs[i]
			continue
		}
		if t != segs[i] {
			return nil, false
		}
	}
	return params, true
}

// Pagination, as Authentik's paginator answers it.

const (
	defaultPageSize = 20
	maxPageSize     = 100
)

type pagination struct {
	Next       int `json:"next"`
	Previous   int `json:"previous"`
	Count      int `json:"count"`
	Current    int `json:"current"`
	TotalPages int `json:"total_pages"`
	StartIndex int `json:"start_index"`
	EndIndex   int `json:"end_index"`
}

type page struct {
	Pagination   pagination     `json:"pagination"`
	Results      any            `json:"results"`
	Autocomplete map[string]any `json:"autocomplete"`
}

// paginate picks the requested page out of n items. A page_size that is not a positive integer
// falls back to the default and a larger one is cut to the maximum; a page outside the range
// (or not a number) is a 404, all as Django REST framework does.
func paginate(q url.Values, n int) (lo, hi int, p pagination, bad *reply) {
	size := defaultPageSize
	if v, err := strconv.Atoi(q.Get("page_size")); err == nil && v > 0 {
		size = min(v, maxPageSize)
	}
	pages := max(1, (n+size-1)/size)

	current := 1
	if raw := q.Get("page"); raw != "" {
		v, err := strconv.Atoi(raw)
		switch {
		case raw == "last":
			current = pages
		case err != nil || v < 1 || v > pages:
			rep := detail(http.StatusNotFound, "Invalid page.")
			return 0, 0, p, &rep
		default:
			current = v
		}
	}

	lo = (current - 1) * size
	hi = min(lo+size, n)
	p = pagination{Count: n, Current: current, TotalPages: pages, EndIndex: current * size}
	if current < pages {
		p.Next = current + 1
	} else {
		p.EndIndex = n
	}
	if current > 1 {
		p.Previous = current - 1
	}
	if n > 0 {
		p.StartIndex = lo + 1
	}
	return lo, hi, p, nil
}

func pageReply(p pagination, results any) reply {
	// Authentik fills autocomplete only for its enterprise query language; it is {} otherwise.
	body := page{Pagination: p, Results: results, Autocomplete: map[string]any{}}
	return reply{http.StatusOK, body}
}

// Query helpers.

// has reports a filter parameter with a value; django-filter ignores empty ones.
func has(q url.Values, name string) bool {
	return q.Get(name) != ""
}

// boolParam reads a django-filter boolean; set is false when the parameter is absent.
func boolParam(q url.Values, name string) (value, set bool, bad *reply) {
	raw, ok := q[name]
	if !ok || len(raw) == 0 || raw[0] == "" {
		return false, false, nil
	}
	switch raw[0] {
	case "true", "True", "1":
		return true, true, nil
	case "false", "False", "0":
		return false, true, nil
	}
	rep := fieldError(name, "Select a valid choice. "+raw[0]+
		" is not one of the available choices.")
	return false, false, &rep
}

// includeParam reads the include_* switches, which Authentik compares with "true" literally.
func includeParam(q url.Values, name string, def bool) bool {
	raw, ok := q[name]
	if !ok || len(raw) == 0 {
		return def
	}
	return strings.ToLower(raw[0]) == "true"
}

// searchMatch applies Django REST framework's search: every term must occur, case-insensitive,
// in at least one of the fields.
func searchMatch(search string, fields ...string) bool {
	terms := strings.Fields(strings.ReplaceAll(search, ",", " "))
	for _, term := range terms {
		term = strings.ToLower(term)
		found := false
		for _, f := range fields {
			if strings.Contains(strings.ToLower(f), term) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// attrFilter is a parsed attributes filter: every term must hold.
type attrFilter []attrTerm

// attrTerm is one key of an attributes filter, as Django reads attributes__<key>=want: "__"
// separates nested keys, and a final "in" or "exact" is the lookup of that name rather than
// a key. Without one the stored value must equal want as JSON; with "in" it must equal one
// element of the list want.
// TODO: other Django lookups at the end of a key (__icontains, __isnull, __contains) are
// treated as keys, so such filters match nothing here, whereas Authentik applies them.
type attrTerm struct {
	key  string // the key as given, lookup included
	path []string
	in   bool
	want any
	// strs holds the elements of an "in" list that are all strings, for a quick test.
	strs map[string]bool
}

// attributeFilter parses the JSON object of an attributes filter; nil means none was given.
func attributeFilter(q url.Values) (attrFilter, *reply) {
	raw := q.Get("attributes")
	if raw == "" {
		return nil, nil
	}
	var filter any
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&filter); err != nil {
		rep := fieldError("non_field_errors", "filter: failed to parse JSON")
		return nil, &rep
	}
	obj, ok := filter.(map[string]any)
	if !ok {
		rep := fieldError("non_field_errors", "filter: value must be key:value mapping")
		return nil, &rep
	}
	f := attrFilter{}
	for key, want := range obj {
		t := attrTerm{key: key, path: strings.Split(key, "__"), want: want}
		if n := len(t.path); n > 1 && (t.path[n-1] == "in" || t.path[n-1] == "exact") {
			t.in = t.path[n-1] == "in"
			t.path = t.path[:n-1]
		}
		if list, ok := want.([]any); ok && t.in {
			t.strs = map[string]bool{}
			for _, w := range list {
				str, ok := w.(string)
				if !ok {
					t.strs = nil
					break
				}
				t.strs[str] = true
			}
		}
		f = append(f, t)
	}
	return f, nil
}

// attributesMatch reports whether stored attributes pass the filter.
func attributesMatch(attrs json.RawMessage, f attrFilter) bool {
	if f == nil {
		return true
	}
	doc, ok := decodeAttrs(attrs)
	return ok && f.matches(doc)
}

// decodeAttrs decodes stored attributes, keeping numbers as written.
func decodeAttrs(attrs json.RawMessage) (any, bool) {
	var doc any
	dec := json.NewDecoder(strings.NewReader(string(attrs)))
	dec.UseNumber()
	return doc, dec.Decode(&doc) == nil
}

// matches applies the filter to decoded attributes.
func (f attrFilter) matches(doc any) bool {
	for _, t := range f {
		if cur, ok := t.lookup(doc); !ok || !t.holds(cur) {
			return false
		}
	}
	return true
}

// lookup finds the value the term's path names in decoded attributes.
func (t attrTerm) lookup(doc any) (any, bool) {
	cur := doc
	for _, part := range t.path {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// holds reports whether a stored value passes the term's lookup.
func (t attrTerm) holds(cur any) bool {
	if !t.in {
		return jsonEqual(cur, t.want)
	}
	if str, ok := cur.(string); ok && t.strs != nil {
		return t.strs[str]
	}
	list, _ := t.want.([]any)
	return slices.ContainsFunc(list, func(w any) bool { return jsonEqual(cur, w) })
}

// jsonEqual compares decoded JSON values; numbers compare by exact value, as jsonb does.
func jsonEqual(a, b any) bool {
	switch av := a.(type) {
	case json.Number:
		bv, ok := b.(json.Number)
		if !ok {
			return false
		}
		x, okA := new(big.Rat).SetString(av.String())
		y, okB := new(big.Rat).SetString(bv.String())
		return okA && okB && x.Cmp(y) == 0
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for k, v := range av {
			if !jsonEqual(v, bv[k]) {
				return false
			}
		}
		return true
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for i := range av {
			if !jsonEqual(av[i], bv[i]) {
				return false
			}
		}
		return true
	default:
		return a == b
	}
}
