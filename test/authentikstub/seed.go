package authentikstub

import (
	"cmp"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Seeding and inspection. Misuse (an unknown pk, a duplicate name, attributes that are not a JSON
// object) is recorded as a violation rather than returned, so a test cannot overlook it.

// usernamePattern is Django's username rule, which the schemas repeat for PartialUser.
var usernamePattern = regexp.MustCompile(`^[\w.@+-]{1,150}$`)

// newUUID returns a version 4 UUID from the seeded generator. Caller holds s.mu.
func (s *Server) newUUID() string {
	var b [16]byte
	for i := range b {
		b[i] = byte(s.idRand.Uint32())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// seedAttrs normalizes seeded attributes, recording a violation and storing {} when invalid.
func (s *Server) seedAttrs(what string, raw json.RawMessage) json.RawMessage {
	attrs, err := normalizeAttrs(raw)
	if err != nil {
		s.violation("seed %s: %v", what, err)
		return json.RawMessage("{}")
	}
	return attrs
}

// addServiceAccount creates the owner of the API token, as Authentik's service-account
// creation does.
func (s *Server) addServiceAccount(username string) int32 {
	return s.AddUser(User{
		Username:   username,
		Name:       username,
		IsActive:   true,
		Type:       "service_account",
		Attributes: json.RawMessage(`{"goauthentik.io/user/token-expires":false}`),
	})
}

// AddUser stores a user and returns its pk. Users get pks from 7 upwards (the token's service
// account, created by New, is the first) and the path "users" (service accounts get
// "goauthentik.io/service-accounts").
func (s *Server) AddUser(u User) int32 {
	attrs := s.seedAttrs("user "+u.Username, u.Attributes)
	typ := cmp.Or(u.Type, "external")
	if !slices.Contains(userTypes, typ) {
		s.violation("seed user %s: unknown type %q", u.Username, typ)
	}
	path := "users"
	if typ == "service_account" {
		path = "goauthentik.io/service-accounts"
	}

	s.mu.Lock()
	defer s.mu.Unlock()

	if _, taken := s.pkOfUsername(u.Username); taken || !usernamePattern.MatchString(u.Username) {
		s.violation("seed user: username %q is taken or not a valid Django username", u.Username)
	}
	now := s.now()
	pk := s.nextUser
	s.nextUser++
	s.usernames[u.Username] = pk
	s.users[pk] = &user{
		pk:        pk,
		uuid:      s.newUUID(),
		username:  u.Username,
		name:      u.Name,
		email:     u.Email,
		isActive:  u.IsActive,
		joined:    now,
		pwChanged: now,
		updated:   now,
		attrs:     attrs,
		path:      path,
		typ:       typ,
	}
	s.attrsChanged(pk)
	return pk
}

// ServiceAccountPK is the pk of the token's owner, the user users/me/ answers with. It appears in
// user lists like any other user.
func (s *Server) ServiceAccountPK() int32 {
	return s.selfPK
}

// User returns a stored user as seed data (current attributes, name, activity and type).
func (s *Server) User(pk int32) (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()

	u := s.users[pk]
	if u == nil {
		return User{}, false
	}
	return User{
		Username:   u.username,
		Name:       u.name,
		Email:      u.email,
		IsActive:   u.isActive,
		Attributes: slices.Clone(u.attrs),
		Type:       u.typ,
	}, true
}

// UserAttributes returns exactly the stored attribute bytes (compact JSON, key order and number
// literals as written), or nil for an unknown user.
func (s *Server) UserAttributes(pk int32) json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()

	if u := s.users[pk]; u != nil {
		return slices.Clone(u.attrs)
	}
	return nil
}

// SetUserAttributes replaces a user's attributes, as another writer (an admin, a flow) would.
func (s *Server) SetUserAttributes(pk int32, attrs json.RawMessage) {
	norm := s.seedAttrs(fmt.Sprintf("user %d", pk), attrs)

	s.mu.Lock()
	defer s.mu.Unlock()

	u := s.users[pk]
	if u == nil {
		s.violation("set attributes: unknown user %d", pk)
		return
	}
	u.attrs = norm
	u.updated = s.now()
	s.attrsChanged(pk)
}

// UserGroupNames returns the names of the user's groups, sorted.
func (s *Server) UserGroupNames(pk int32) []string {
	s.mu.Lock()
	defer s.mu.Unlock()

	names := []string{}
	for _, g := range s.groupsOf(pk) {
		names = append(names, g.name)
	}
	slices.Sort(names)
	return names
}

// DeleteUser removes a user with its memberships, connections, sessions and tokens.
func (s *Server) DeleteUser(pk int32) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.users[pk] == nil {
		s.violation("delete user: unknown user %d", pk)
		return
	}
	delete(s.usernames, s.users[pk].username)
	delete(s.users, pk)
	s.attrsChanged(pk)
	for _, g := range s.groups {
		delete(g.members, pk)
	}
	for id, c := range s.conns {
		if c.userPK == pk {
			delete(s.conns, id)
			s.connOrder = nil
		}
	}
	for id, se := range s.sessions {
		if se.userPK == pk {
			delete(s.sessions, id)
		}
	}
	for _, store := range []map[int32]*grant{s.access, s.refresh} {
		for id, g := range store {
			if g.userPK == pk {
				delete(store, id)
			}
		}
	}
}

// AddGroup stores a group and returns its UUID (the group's pk in the API).
func (s *Server) AddGroup(g Group) string {
	attrs := s.seedAttrs("group "+g.Name, g.Attributes)

	s.mu.Lock()
	defer s.mu.Unlock()

	for _, other := range s.groups {
		if other.name == g.Name {
			s.violation("seed group: name %q is taken", g.Name)
		}
	}
	id := s.newUUID()
	s.groups[id] = &group{
		uuid:      id,
		numPK:     s.nextGroup,
		name:      g.Name,
		superuser: g.IsSuperuser,
		attrs:     attrs,
		parents:   append([]string(nil), g.Parents...),
		members:   map[int32]struct{}{},
	}
	s.nextGroup++
	return id
}

// SetGroupAttributes replaces a group's attributes, as an admin editing the group would.
func (s *Server) SetGroupAttributes(uuid string, attrs json.RawMessage) {
	norm := s.seedAttrs("group "+uuid, attrs)

	s.mu.Lock()
	defer s.mu.Unlock()

	g := s.groups[strings.ToLower(uuid)]
	if g == nil {
		s.violation("set group attributes: unknown group %s", uuid)
		return
	}
	g.attrs = norm
}

// DeleteGroup removes a group and its memberships.
func (s *Server) DeleteGroup(uuid string) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.groups[strings.ToLower(uuid)] == nil {
		s.violation("delete group: unknown group %s", uuid)
		return
	}
	delete(s.groups, strings.ToLower(uuid))
}

// AddMember puts a user into a group (a no-op when it already is a member).
func (s *Server) AddMember(groupUUID string, userPK int32) {
	s.setMember(groupUUID, userPK, true)
}

// RemoveMember takes a user out of a group.
func (s *Server) RemoveMember(groupUUID string, userPK int32) {
	s.setMember(groupUUID, userPK, false)
}

func (s *Server) setMember(groupUUID string, userPK int32, member bool) {
	s.mu.Lock()
	defer s.mu.Unlock()

	g := s.groups[strings.ToLower(groupUUID)]
	if g == nil || s.users[userPK] == nil {
		s.violation("membership: unknown group %s or user %d", groupUUID, userPK)
		return
	}
	if member {
		g.members[userPK] = struct{}{}
	} else {
		delete(g.members, userPK)
	}
}

// GroupMembers returns the pks of a group's members, ascending.
func (s *Server) GroupMembers(groupUUID string) []int32 {
	s.mu.Lock()
	defer s.mu.Unlock()

	g := s.groups[strings.ToLower(groupUUID)]
	if g == nil {
		return nil
	}
	return memberPKs(g)
}

// AddSource stores an OAuth source (the Discord source of the bridge) and returns its UUID; a
// second call with the same slug renames the existing source.
func (s *Server) AddSource(slug, name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addSource(slug, name).uuid
}

// addSource is AddSource for a caller that holds s.mu.
func (s *Server) addSource(slug, name string) *source {
	if src := s.sources[slug]; src != nil {
		src.name = name
		return src
	}
	src := &source{
		uuid:       s.newUUID(),
		slug:       slug,
		name:       name,
		authFlow:   s.newUUID(),
		enrollFlow: s.newUUID(),
	}
	s.sources[slug] = src
	return src
}

// AddConnection links a user to an OAuth source under an identifier (the Discord user ID) and
// returns the connection's pk. An unknown source is created, named after its slug.
func (s *Server) AddConnection(sourceSlug string, userPK int32, identifier string) int32 {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.users[userPK] == nil {
		s.violation("seed connection: unknown user %d", userPK)
		return 0
	}
	src := s.sources[sourceSlug]
	if src == nil {
		src = s.addSource(sourceSlug, titleCase(sourceSlug))
	}
	pk := s.nextConn
	s.nextConn++
	s.connOrder = nil
	s.conns[pk] = &connection{
		pk:         pk,
		userPK:     userPK,
		source:     src,
		identifier: identifier,
		created:    s.now(),
	}
	return pk
}

func titleCase(slug string) string {
	if slug == "" {
		return slug
	}
	return strings.ToUpper(slug[:1]) + slug[1:]
}

// DeleteConnection removes a source connection.
func (s *Server) DeleteConnection(pk int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, pk)
	s.connOrder = nil
}

// AddSession gives a user a logged-in browser session and returns its UUID.
func (s *Server) AddSession(userPK int32) string {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.users[userPK] == nil {
		s.violation("seed session: unknown user %d", userPK)
		return ""
	}
	now := s.now()
	id := s.newUUID()
	s.sessions[id] = &session{
		uuid: id, userPK: userPK, lastUsed: now, expires: now.Add(14 * 24 * time.Hour),
	}
	return id
}

// AddAccessToken issues an OAuth2 access token to a user and returns its pk.
func (s *Server) AddAccessToken(userPK int32) int32 {
	return s.addGrant(s.access, userPK, time.Hour)
}

// AddRefreshToken issues an OAuth2 refresh token to a user and returns its pk.
func (s *Server) AddRefreshToken(userPK int32) int32 {
	return s.addGrant(s.refresh, userPK, 30*24*time.Hour)
}

func (s *Server) addGrant(store map[int32]*grant, userPK int32, valid time.Duration) int32 {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.users[userPK] == nil {
		s.violation("seed token: unknown user %d", userPK)
		return 0
	}
	pk := s.nextGrant
	s.nextGrant++
	store[pk] = &grant{pk: pk, userPK: userPK, expires: s.now().Add(valid)}
	return pk
}

// SessionCount, AccessTokenCount and RefreshTokenCount tell how many a user still has, to check
// revocation.
func (s *Server) SessionCount(userPK int32) int {
	s.mu.Lock()
	defer s.mu.Unlock()

	n := 0
	for _, se := range s.sessions {
		if se.userPK == userPK {
			n++
		}
	}
	return n
}

// AccessTokenCount: see SessionCount.
func (s *Server) AccessTokenCount(userPK int32) int { return s.grantCount(s.access, userPK) }

// RefreshTokenCount: see SessionCount.
func (s *Server) RefreshTokenCount(userPK int32) int { return s.grantCount(s.refresh, userPK) }

func (s *Server) grantCount(store map[int32]*grant, userPK int32) int {
	s.mu.Lock()
	defer s.mu.Unlock()

	n := 0
	for _, g := range store {
		if g.userPK == userPK {
			n++
		}
	}
	return n
}
