package authentikstub

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Users.

func (s *Server) listUsers(c *call) reply {
	q := c.query
	active, activeSet, bad := boolParam(q, "is_active")
	if bad != nil {
		return *bad
	}
	superuser, superSet, bad := boolParam(q, "is_superuser")
	if bad != nil {
		return *bad
	}
	attrFilter, bad := attributeFilter(q)
	if bad != nil {
		return *bad
	}
	s.stat.Lock()
	if s.ignoreAttrFilter {
		attrFilter = nil
	}
	s.stat.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()

	inGroups, bad := s.groupsParam(q, "groups_by_pk", func(g *group) string { return g.uuid })
	if bad != nil {
		return *bad
	}
	inNamed, bad := s.groupsParam(q, "groups_by_name", func(g *group) string { return g.name })
	if bad != nil {
		return *bad
	}

	pool := s.users
	if cand, ok := s.attrCandidates(attrFilter); ok {
		pool = cand
	}
	var list []*user
	for _, u := range pool {
		switch {
		case has(q, "username") && u.username != q.Get("username"),
			has(q, "email") && u.email != q.Get("email"),
			has(q, "name") && u.name != q.Get("name"),
			has(q, "uuid") && u.uuid != q.Get("uuid"),
			has(q, "path") && u.path != q.Get("path"),
			has(q, "path_startswith") && !strings.HasPrefix(u.path, q.Get("path_startswith")),
			has(q, "type") && !slices.Contains(q["type"], u.typ),
			activeSet && u.isActive != active,
			superSet && s.isSuperuser(u.pk) != superuser,
			inGroups != nil && !s.memberOfAny(u.pk, inGroups),
			inNamed != nil && !s.memberOfAny(u.pk, inNamed),
			has(q, "search") && !searchMatch(q.Get("search"), u.username, u.name, u.email, u.uuid),
			!u.matches(attrFilter):
			continue
		}
		list = append(list, u)
	}
	sortUsers(list, q.Get("ordering"))

	lo, hi, p, bad := paginate(q, len(list))
	if bad != nil {
		return *bad
	}
	withGroups := includeParam(q, "include_groups", true)
	withRoles := includeParam(q, "include_roles", true)
	results := make([]userView, 0, hi-lo)
	for _, u := range list[lo:hi] {
		results = append(results, s.userView(u, withGroups, withRoles))
	}
	return pageReply(p, results)
}

// sortUsers orders by Authentik's default (username) or by a supported ordering parameter.
func sortUsers(list []*user, ordering string) {
	desc := strings.HasPrefix(ordering, "-")
	key := func(a, b *user) int { return strings.Compare(a.username, b.username) }
	switch strings.TrimPrefix(ordering, "-") {
	case "pk", "id":
		key = func(a, b *user) int { return cmp.Compare(a.pk, b.pk) }
	case "name":
		key = func(a, b *user) int { return strings.Compare(a.name, b.name) }
	case "email":
		key = func(a, b *user) int { return strings.Compare(a.email, b.email) }
	case "username":
	default:
		desc = false
	}
	slices.SortFunc(list, func(a, b *user) int {
		r := cmp.Or(key(a, b), cmp.Compare(a.pk, b.pk))
		if desc {
			return -r
		}
		return r
	})
}

// groupsParam resolves a multiple-choice group filter; an unknown choice is a 400 as in
// django-filter. Nil means the filter is absent. Caller holds s.mu.
func (s *Server) groupsParam(q url.Values, name string, id func(*group) string) ([]*group, *reply) {
	values := q[name]
	if len(values) == 0 {
		return nil, nil
	}
	out := []*group{}
	for _, v := range values {
		found := false
		for _, g := range s.groups {
			if id(g) == v {
				out = append(out, g)
				found = true
			}
		}
		if !found {
			rep := fieldError(name, "Select a valid choice. "+v+
				" is not one of the available choices.")
			return nil, &rep
		}
	}
	return out, nil
}

func (s *Server) memberOfAny(pk int32, groups []*group) bool {
	for _, g := range groups {
		if _, ok := g.members[pk]; ok {
			return true
		}
	}
	return false
}

var noUser = detail(http.StatusNotFound, "No User matches the given query.")

// lookupUser resolves the {id} of a user route. Caller holds s.mu.
func (s *Server) lookupUser(c *call) *user {
	pk, err := strconv.ParseInt(c.params["id"], 10, 32)
	if err != nil {
		return nil
	}
	return s.users[int32(pk)]
}

func (s *Server) getUser(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()

	u := s.lookupUser(c)
	if u == nil {
		return noUser
	}
	return reply{http.StatusOK, s.userView(u, true, true)}
}

func (s *Server) me(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()

	self := s.userSelfView(s.users[s.selfPK])
	return reply{http.StatusOK, sessionUserView{User: self, Users: []userSelfView{self}}}
}

func (s *Server) patchUser(c *call) reply { return s.updateUser(c, true) }

func (s *Server) putUser(c *call) reply { return s.updateUser(c, false) }

// updateUser applies a PATCH (partial) or PUT with the UserSerializer's rules: every field sent
// replaces the stored value as a whole (attributes and groups included, so {} and [] wipe them);
// a PUT also requires username and name and, through the serializer's default, empties groups
// and roles that it leaves out. Nothing is changed unless every field is valid.
func (s *Server) updateUser(c *call, partial bool) reply {
	fields, bad := decodeObject(c.body)
	if bad != nil {
		return *bad
	}

	s.mu.Lock()
	defer s.mu.Unlock()

	u := s.lookupUser(c)
	if u == nil {
		return noUser
	}
	next := *u
	var groups []*group
	setGroups := !partial
	errs := map[string][]string{}

	for name, raw := range fields {
		var msg string
		switch name {
		case "username":
			msg = s.setUsername(&next, raw)
		case "name":
			msg = decodeString(raw, &next.name, true)
		case "email":
			msg = decodeString(raw, &next.email, true)
			if msg == "" && next.email != "" && !strings.Contains(next.email, "@") {
				msg = "Enter a valid email address."
			}
		case "is_active":
			msg = decodeBool(raw, &next.isActive)
		case "last_login":
			msg = decodeTime(raw, &next.lastLogin)
		case "attributes":
			attrs, err := normalizeAttrs(raw)
			if err != nil {
				msg = "Value must be valid JSON object."
			}
			next.attrs = attrs
		case "path":
			msg = decodeString(raw, &next.path, false)
			if msg == "" {
				msg = checkPath(next.path)
			}
		case "type":
			msg = decodeString(raw, &next.typ, false)
			if msg == "" && !slices.Contains(userTypes, next.typ) {
				msg = fmt.Sprintf("\"%s\" is not a valid choice.", next.typ)
			}
		case "groups":
			setGroups = true
			groups, msg = s.decodeGroups(raw)
		case "roles":
			// The stub has no roles, so only an empty list is valid.
			var ids []string
			if err := json.Unmarshal(raw, &ids); err != nil || ids == nil {
				msg = "Expected a list of items."
			} else if len(ids) > 0 {
				msg = fmt.Sprintf("Invalid pk \"%s\" - object does not exist.", ids[0])
			}
		}
		if msg != "" {
			errs[name] = []string{msg}
		}
	}
	if !partial {
		for _, name := range []string{"username", "name"} {
			if _, ok := fields[name]; !ok {
				errs[name] = []string{"This field is required."}
			}
		}
	}
	if len(errs) > 0 {
		return reply{http.StatusBadRequest, errs}
	}

	next.updated = s.now()
	*u = next
	s.attrsChanged(u.pk)
	if setGroups {
		for _, g := range s.groups {
			delete(g.members, u.pk)
		}
		for _, g := range groups {
			g.members[u.pk] = struct{}{}
		}
	}
	return reply{http.StatusOK, s.userView(u, true, true)}
}

func (s *Server) setUsername(u *user, raw json.RawMessage) string {
	var name string
	if msg := decodeString(raw, &name, false); msg != "" {
		return msg
	}
	if len(name) > 150 {
		return "Ensure this field has no more than 150 characters."
	}
	if pk, taken := s.pkOfUsername(name); taken && pk != u.pk {
		return "This field must be unique."
	}
	delete(s.usernames, u.username)
	u.username = name
	s.usernames[name] = u.pk
	return ""
}

// decodeGroups resolves the group UUIDs of a user update. Caller holds s.mu.
func (s *Server) decodeGroups(raw json.RawMessage) ([]*group, string) {
	var ids []string
	if err := json.Unmarshal(raw, &ids); err != nil || ids == nil {
		return nil, "Expected a list of items."
	}
	groups := make([]*group, 0, len(ids))
	for _, id := range ids {
		g, ok := s.groups[strings.ToLower(id)]
		if !ok {
			return nil, fmt.Sprintf("Invalid pk \"%s\" - object does not exist.", id)
		}
		groups = append(groups, g)
	}
	return groups, ""
}

func checkPath(path string) string {
	if path == "" {
		return "This field may not be blank."
	}
	if strings.HasPrefix(path, "/") || strings.HasSuffix(path, "/") {
		return "No leading or trailing slashes allowed."
	}
	if slices.Contains(strings.Split(path, "/"), "") {
		return "No empty segments in user path allowed."
	}
	return ""
}

// Field decoders answer Django REST framework's messages for the common mistakes.

func decodeObject(body []byte) (map[string]json.RawMessage, *reply) {
	if !json.Valid(body) {
		rep := detail(http.StatusBadRequest, "JSON parse error - Expecting value")
		return nil, &rep
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		rep := fieldError("non_field_errors", "Invalid data. Expected a dictionary.")
		return nil, &rep
	}
	return fields, nil
}

func decodeString(raw json.RawMessage, dst *string, blankOK bool) string {
	var v *string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "Not a valid string."
	}
	if v == nil {
		return "This field may not be null."
	}
	if *v == "" && !blankOK {
		return "This field may not be blank."
	}
	*dst = *v
	return ""
}

func decodeBool(raw json.RawMessage, dst *bool) string {
	var v *bool
	if err := json.Unmarshal(raw, &v); err != nil || v == nil {
		return "Must be a valid boolean."
	}
	*dst = *v
	return ""
}

func decodeTime(raw json.RawMessage, dst **time.Time) string {
	var v *string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "Datetime has wrong format."
	}
	if v == nil {
		*dst = nil
		return ""
	}
	t, err := time.Parse(time.RFC3339Nano, *v)
	if err != nil {
		return "Datetime has wrong format."
	}
	*dst = &t
	return ""
}

// Groups.

var noGroup = detail(http.StatusNotFound, "No Group matches the given query.")

func groupOpts(q url.Values) groupOptions {
	return groupOptions{
		users:          includeParam(q, "include_users", true),
		parents:        includeParam(q, "include_parents", false),
		children:       includeParam(q, "include_children", false),
		inheritedRoles: includeParam(q, "include_inherited_roles", false),
	}
}

func (s *Server) listGroups(c *call) reply {
	q := c.query
	superuser, superSet, bad := boolParam(q, "is_superuser")
	if bad != nil {
		return *bad
	}
	attrFilter, bad := attributeFilter(q)
	if bad != nil {
		return *bad
	}

	s.mu.Lock()
	defer s.mu.Unlock()

	memberPK := map[int32]bool{}
	for _, v := range q["members_by_pk"] {
		pk, err := strconv.ParseInt(v, 10, 32)
		if err != nil || s.users[int32(pk)] == nil {
			return fieldError("members_by_pk", "Select a valid choice. "+v+
				" is not one of the available choices.")
		}
		memberPK[int32(pk)] = true
	}
	for _, v := range q["members_by_username"] {
		pk, ok := s.pkOfUsername(v)
		if !ok {
			return fieldError("members_by_username", "Select a valid choice. "+v+
				" is not one of the available choices.")
		}
		memberPK[pk] = true
	}

	var list []*group
	for _, g := range s.groups {
		switch {
		case has(q, "name") && g.name != q.Get("name"),
			superSet && g.superuser != superuser,
			len(memberPK) > 0 && !hasAnyMember(g, memberPK),
			!searchMatch(q.Get("search"), g.name),
			!attributesMatch(g.attrs, attrFilter):
			continue
		}
		list = append(list, g)
	}
	desc := q.Get("ordering") == "-name"
	slices.SortFunc(list, func(a, b *group) int {
		r := cmp.Or(strings.Compare(a.name, b.name), cmp.Compare(a.numPK, b.numPK))
		if desc {
			return -r
		}
		return r
	})

	lo, hi, p, bad := paginate(q, len(list))
	if bad != nil {
		return *bad
	}
	opt := groupOpts(q)
	results := make([]groupView, 0, hi-lo)
	for _, g := range list[lo:hi] {
		results = append(results, s.groupView(g, opt))
	}
	return pageReply(p, results)
}

func hasAnyMember(g *group, pks map[int32]bool) bool {
	for pk := range g.members {
		if pks[pk] {
			return true
		}
	}
	return false
}

// pkOfUsername looks a username up in the index, which keeps seeding a large guild linear.
// Caller holds s.mu.
func (s *Server) pkOfUsername(name string) (int32, bool) {
	pk, ok := s.usernames[name]
	return pk, ok
}

func (s *Server) getGroup(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()

	g := s.groups[strings.ToLower(c.params["group_uuid"])]
	if g == nil {
		return noGroup
	}
	return reply{http.StatusOK, s.groupView(g, groupOpts(c.query))}
}

func (s *Server) addUserToGroup(c *call) reply { return s.changeMembership(c, true) }

func (s *Server) removeUserFromGroup(c *call) reply { return s.changeMembership(c, false) }

// changeMembership is add_user and remove_user: 204 whether or not the membership already was
// as asked, 404 for an unknown group or user. Like Django, it accepts the pk as a number or a
// numeric string (the schemas allow only the number, so validation flags the string).
func (s *Server) changeMembership(c *call, add bool) reply {
	fields, bad := decodeObject(c.body)
	if bad != nil {
		return *bad
	}

	s.mu.Lock()
	defer s.mu.Unlock()

	g := s.groups[strings.ToLower(c.params["group_uuid"])]
	if g == nil {
		return noGroup
	}
	var pk json.Number
	raw := strings.Trim(string(fields["pk"]), `"`)
	if err := json.Unmarshal([]byte(raw), &pk); err != nil {
		return detail(http.StatusNotFound, "Not found.")
	}
	n, err := pk.Int64()
	if err != nil || n != int64(int32(n)) || s.users[int32(n)] == nil {
		return detail(http.StatusNotFound, "Not found.")
	}

	if add {
		g.members[int32(n)] = struct{}{}
	} else {
		delete(g.members, int32(n))
	}
	return reply{status: http.StatusNoContent}
}

// Sources.

func (s *Server) getOAuthSource(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()

	src := s.sources[c.params["slug"]]
	if src == nil {
		return detail(http.StatusNotFound, "No OAuthSource matches the given query.")
	}
	return reply{http.StatusOK, oauthSourceView(src)}
}

// listConnections filters by source__slug and user, searches username, source slug and
// identifier (substring, so callers must compare the identifier exactly themselves), and orders
// by source slug, then pk.
func (s *Server) listConnections(c *call) reply {
	q := c.query
	s.mu.Lock()
	defer s.mu.Unlock()

	var list []*connection
	if !has(q, "user") && q.Get("search") == "" {
		// The bridge's full pass pages through one source; a scan per page would make the
		// stand-in, not the bridge, the cost of a large guild.
		list = s.sortedConns(q.Get("source__slug"))
	} else {
		for _, conn := range s.sortedConns("") {
			switch {
			case has(q, "source__slug") && conn.source.slug != q.Get("source__slug"),
				has(q, "user") && strconv.Itoa(int(conn.userPK)) != q.Get("user"),
				!searchMatch(q.Get("search"), s.users[conn.userPK].username, conn.source.slug,
					conn.identifier):
				continue
			}
			list = append(list, conn)
		}
	}

	lo, hi, p, bad := paginate(q, len(list))
	if bad != nil {
		return *bad
	}
	results := make([]map[string]any, 0, hi-lo)
	for _, conn := range list[lo:hi] {
		results = append(results, s.connectionView(conn))
	}
	return pageReply(p, results)
}

// Sessions.

func (s *Server) listSessions(c *call) reply {
	q := c.query
	s.mu.Lock()
	defer s.mu.Unlock()

	var list []*session
	for _, se := range s.sessions {
		name := s.users[se.userPK].username
		if has(q, "user__username") && name != q.Get("user__username") ||
			!searchMatch(q.Get("search"), name) {
			continue
		}
		list = append(list, se)
	}
	slices.SortFunc(list, func(a, b *session) int {
		return cmp.Or(a.lastUsed.Compare(b.lastUsed), strings.Compare(a.uuid, b.uuid))
	})

	lo, hi, p, bad := paginate(q, len(list))
	if bad != nil {
		return *bad
	}
	results := make([]map[string]any, 0, hi-lo)
	for _, se := range list[lo:hi] {
		results = append(results, sessionView(se))
	}
	return pageReply(p, results)
}

var noSession = detail(http.StatusNotFound, "No AuthenticatedSession matches the given query.")

func (s *Server) getSession(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()

	se := s.sessions[strings.ToLower(c.params["uuid"])]
	if se == nil {
		return noSession
	}
	return reply{http.StatusOK, sessionView(se)}
}

func (s *Server) deleteSession(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()

	id := strings.ToLower(c.params["uuid"])
	if s.sessions[id] == nil {
		return noSession
	}
	delete(s.sessions, id)
	return reply{status: http.StatusNoContent}
}

// OAuth2 access and refresh tokens share one shape and one set of views.

type grantKind struct {
	model string
	store func(*Server) map[int32]*grant
}

var (
	accessTokens  = grantKind{"AccessToken", func(s *Server) map[int32]*grant { return s.access }}
	refreshTokens = grantKind{"RefreshToken", func(s *Server) map[int32]*grant { return s.refresh }}
)

func (k grantKind) list(s *Server, c *call) reply {
	q := c.query
	s.mu.Lock()
	defer s.mu.Unlock()

	var list []*grant
	for _, g := range k.store(s) {
		if has(q, "user") && strconv.Itoa(int(g.userPK)) != q.Get("user") ||
			has(q, "provider") && q.Get("provider") != "1" ||
			!searchMatch(q.Get("search"), s.users[g.userPK].username) {
			continue
		}
		list = append(list, g)
	}
	slices.SortFunc(list, func(a, b *grant) int { return cmp.Compare(a.pk, b.pk) })

	lo, hi, p, bad := paginate(q, len(list))
	if bad != nil {
		return *bad
	}
	now := s.now()
	results := make([]map[string]any, 0, hi-lo)
	for _, g := range list[lo:hi] {
		results = append(results, s.grantView(g, now))
	}
	return pageReply(p, results)
}

func (k grantKind) lookup(s *Server, c *call) (*grant, reply) {
	pk, err := strconv.ParseInt(c.params["id"], 10, 32)
	g := k.store(s)[int32(pk)]
	if err != nil || g == nil {
		return nil, detail(http.StatusNotFound, "No "+k.model+" matches the given query.")
	}
	return g, reply{}
}

func (k grantKind) get(s *Server, c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()

	g, rep := k.lookup(s, c)
	if g == nil {
		return rep
	}
	return reply{http.StatusOK, s.grantView(g, s.now())}
}

func (k grantKind) del(s *Server, c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()

	g, rep := k.lookup(s, c)
	if g == nil {
		return rep
	}
	delete(k.store(s), g.pk)
	return reply{status: http.StatusNoContent}
}

// sortedConns returns the connections of one source, or of all when slug is "", in
// Authentik's order (source slug, then pk). The lists are kept between requests, so paging
// through a large guild neither scans nor sorts it once per page. Caller holds s.mu.
func (s *Server) sortedConns(slug string) []*connection {
	if s.connOrder == nil {
		all := make([]*connection, 0, len(s.conns))
		for _, c := range s.conns {
			all = append(all, c)
		}
		slices.SortFunc(all, func(a, b *connection) int {
			return cmp.Or(strings.Compare(a.source.slug, b.source.slug), cmp.Compare(a.pk, b.pk))
		})
		s.connOrder = map[string][]*connection{"": all}
		for _, c := range all {
			s.connOrder[c.source.slug] = append(s.connOrder[c.source.slug], c)
		}
	}
	return s.connOrder[slug]
}
