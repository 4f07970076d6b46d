// Package groupmatch reads the discord_role_id attribute of Authentik groups into a mapping
// from Discord role IDs to the groups they feed, and computes which of those managed groups a
// member belongs in. A value it cannot read exactly is reported, never guessed.
package groupmatch

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// AttributeKey is the group attribute that names the Discord role(s) feeding a group.
const AttributeKey = "discord_role_id"

// maxIDDigits is the length of the largest uint64, the widest a Discord snowflake can be.
const maxIDDigits = 20

// maxExcerpt bounds Invalid.Value so one huge attribute cannot flood the status page.
const maxExcerpt = 120

// Group is an Authentik group as the mapping needs it.
type Group struct {
	UUID        string
	Name        string
	IsSuperuser bool
	// Parents are the uuids of the group's parent groups. Authentik makes members of a group
	// superusers when any ancestor is marked superuser, so the check follows them.
	Parents []string
	// Attributes is the group's attributes object as raw JSON, so numbers keep their digits.
	Attributes json.RawMessage
}

// Invalid is a group whose discord_role_id (or attributes) could not be read, or which may not
// be managed. The group is not managed at all, so a mistake never silently narrows or widens it.
type Invalid struct {
	GroupUUID string
	GroupName string
	// Reason says what is wrong in words an admin can act on.
	Reason string
	// Value is the offending raw JSON, compacted and shortened.
	Value string
}

// Options changes what Build accepts.
type Options struct {
	// AllowSuperuser lets groups marked superuser be managed (BRIDGE_ALLOW_SUPERUSER_GROUPS).
	AllowSuperuser bool
}

// Mapping is the role→group mapping read from a list of groups. It is immutable once built and
// safe for concurrent use; a nil *Mapping manages nothing. Methods return fresh slices.
type Mapping struct {
	groups     map[string]Group    // managed groups by UUID
	managed    []Group             // managed groups sorted by name, then UUID
	roleGroups map[string][]string // role ID → group UUIDs, in managed order
	groupRoles map[string][]string // group UUID → role IDs, ascending
	roles      []string            // every role ID, ascending
	invalid    []Invalid           // sorted by group name, then UUID
}

// Build reads every group's discord_role_id. A group without the attribute is simply not
// managed. A group whose value is not exactly one or more Discord IDs, whose attributes are not
// a JSON object, or which is marked superuser while o.AllowSuperuser is false, is not managed
// and is reported by Invalid.
//
// A list with one bad element refuses the whole group, not only that element: a typo in one ID
// must not quietly leave the group fed by fewer roles than the admin wrote.
func Build(groups []Group, o Options) *Mapping {
	m := &Mapping{
		groups:     map[string]Group{},
		roleGroups: map[string][]string{},
		groupRoles: map[string][]string{},
	}
	uuids := map[string]int{}
	byUUID := map[string]Group{}
	for _, g := range groups {
		uuids[g.UUID]++
		byUUID[g.UUID] = g
	}

	for _, g := range groups {
		roles, present, reason, value := readRoles(g.Attributes)
		if !present {
			continue
		}
		if reason == "" {
			reason = refusal(g, uuids[g.UUID], superAncestor(g, byUUID), o)
		}
		if reason != "" {
			m.invalid = append(m.invalid, Invalid{
				GroupUUID: g.UUID, GroupName: g.Name, Reason: reason, Value: value,
			})
			continue
		}

		m.groups[g.UUID] = g
		m.managed = append(m.managed, g)
		m.groupRoles[g.UUID] = roles
	}

	slices.SortFunc(m.managed, func(a, b Group) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.UUID, b.UUID))
	})
	for _, g := range m.managed {
		for _, r := range m.groupRoles[g.UUID] {
			m.roleGroups[r] = append(m.roleGroups[r], g.UUID)
		}
	}
	for r := range m.roleGroups {
		m.roles = append(m.roles, r)
	}
	slices.SortFunc(m.roles, compareIDs)
	slices.SortFunc(m.invalid, func(a, b Invalid) int {
		return cmp.Or(strings.Compare(a.GroupName, b.GroupName),
			strings.Compare(a.GroupUUID, b.GroupUUID))
	})
	return m
}

// superAncestor returns the name of the nearest ancestor of g marked superuser, or "".
// Parents that are not in the listing are skipped; cycles end the walk.
func superAncestor(g Group, byUUID map[string]Group) string {
	seen := map[string]bool{g.UUID: true}
	queue := append([]string(nil), g.Parents...)
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		p, ok := byUUID[id]
		if !ok {
			continue
		}
		if p.IsSuperuser {
			return p.Name
		}
		queue = append(queue, p.Parents...)
	}
	return ""
}

// refusal says why a group with a readable mapping still may not be managed, or "".
func refusal(g Group, copies int, superParent string, o Options) string {
	switch {
	case g.UUID == "":
		return "group has no UUID"
	case copies > 1:
		return "the same group UUID was listed more than once; refusing all copies"
	case g.IsSuperuser && !o.AllowSuperuser:
		return "group is marked superuser; the bridge manages such a group only when " +
			"BRIDGE_ALLOW_SUPERUSER_GROUPS=true, because a Discord role would then grant full " +
			"control of Authentik"
	case superParent != "" && !o.AllowSuperuser:
		return "group inherits superuser from its ancestor " + strconv.Quote(superParent) +
			"; the bridge manages such a group only when BRIDGE_ALLOW_SUPERUSER_GROUPS=true, " +
			"because a Discord role would then grant full control of Authentik"
	}
	return ""
}

// Managed reports whether the group with this UUID is managed.
func (m *Mapping) Managed(groupUUID string) bool {
	if m == nil {
		return false
	}
	_, ok := m.groups[groupUUID]
	return ok
}

// Group returns the managed group with this UUID.
func (m *Mapping) Group(uuid string) (Group, bool) {
	if m == nil {
		return Group{}, false
	}
	g, ok := m.groups[uuid]
	return g, ok
}

// ManagedGroups returns every managed group, sorted by name, then UUID.
func (m *Mapping) ManagedGroups() []Group {
	if m == nil {
		return nil
	}
	return slices.Clone(m.managed)
}

// GroupsForRole returns the UUIDs of the groups the role feeds, in ManagedGroups order.
func (m *Mapping) GroupsForRole(roleID string) []string {
	if m == nil {
		return nil
	}
	return slices.Clone(m.roleGroups[roleID])
}

// RolesForGroup returns the role IDs that feed the group, ascending.
func (m *Mapping) RolesForGroup(groupUUID string) []string {
	if m == nil {
		return nil
	}
	return slices.Clone(m.groupRoles[groupUUID])
}

// Roles returns every role ID used by a managed group, ascending.
func (m *Mapping) Roles() []string {
	if m == nil {
		return nil
	}
	return slices.Clone(m.roles)
}

// Invalid returns every refused group, sorted by group name, then UUID.
func (m *Mapping) Invalid() []Invalid {
	if m == nil {
		return nil
	}
	return slices.Clone(m.invalid)
}

// Desired returns the set of managed group UUIDs a member with these roles should be in. The
// result is never nil. Discord never lists @everyone among a member's roles; a caller that wants
// a group fed by @everyone must add the guild ID itself.
func (m *Mapping) Desired(roleIDs []string) map[string]bool {
	out := map[string]bool{}
	if m == nil {
		return out
	}
	for _, r := range roleIDs {
		for _, uuid := range m.roleGroups[r] {
			out[uuid] = true
		}
	}
	return out
}

// compareIDs orders role IDs numerically; IDs never have leading zeros, so length decides first.
func compareIDs(a, b string) int {
	return cmp.Or(cmp.Compare(len(a), len(b)), strings.Compare(a, b))
}

// readRoles extracts the role IDs of one group. present is false when the group does not carry
// the attribute at all (or has no attributes); otherwise either roles or reason is set, and
// value holds the raw JSON that was read.
func readRoles(attrs json.RawMessage) (roles []string, present bool, reason, value string) {
	trimmed := bytes.TrimSpace(attrs)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return nil, false, "", ""
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &obj); err != nil {
		why := "attributes are not valid JSON"
		if json.Valid(trimmed) {
			why = "attributes are " + kindOf(trimmed) + ", not a JSON object"
		}
		return nil, true, why, excerpt(trimmed)
	}
	raw, ok := obj[AttributeKey]
	if !ok {
		return nil, false, "", ""
	}
	value = excerpt(raw)

	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		// Unreachable: Unmarshal above already checked raw is one valid JSON value.
		return nil, true, "value is not valid JSON", value
	}

	switch v := v.(type) {
	case []any:
		if len(v) == 0 {
			const why = "empty list: give at least one role ID, or remove the attribute"
			return nil, true, why, value
		}
		var problems []string
		for i, elem := range v {
			id, why := readID(elem)
			if why != "" {
				problems = append(problems, fmt.Sprintf("element %d of %d: %s", i+1, len(v), why))
				continue
			}
			if !slices.Contains(roles, id) {
				roles = append(roles, id)
			}
		}
		if len(problems) > 0 {
			return nil, true, strings.Join(problems, "; ") + " (the whole list is refused)", value
		}
		slices.SortFunc(roles, compareIDs)
		return roles, true, "", value
	default:
		id, why := readID(v)
		if why != "" {
			return nil, true, why, value
		}
		return []string{id}, true, "", value
	}
}

// readID reads one role ID from a decoded JSON value (decoded with UseNumber).
func readID(v any) (id, reason string) {
	switch v := v.(type) {
	case string:
		s := strings.TrimSpace(v)
		if s == "" {
			return "", "empty string"
		}
		return checkDigits(s, "string")
	case json.Number:
		s := string(v)
		switch {
		case strings.HasPrefix(s, "-"):
			return "", fmt.Sprintf("negative number %s", s)
		case strings.ContainsAny(s, ".eE"):
			return "", fmt.Sprintf("number %s has a fraction or exponent; "+
				"write the ID as a string of digits", s)
		}
		return checkDigits(s, "number")
	case nil:
		return "", "null is not a role ID"
	case bool:
		return "", "a boolean is not a role ID"
	case map[string]any:
		return "", "an object is not a role ID"
	case []any:
		return "", "a nested list is not a role ID"
	default:
		return "", fmt.Sprintf("unexpected JSON value %T", v)
	}
}

// checkDigits accepts s only if it is a Discord ID: ASCII digits, no leading zero, within
// uint64. The digits are kept as text; a JSON number never passes through float64.
func checkDigits(s, kind string) (string, string) {
	if strings.HasPrefix(s, "-") && allDigits(s[1:]) {
		return "", fmt.Sprintf("negative %s %q", kind, s)
	}
	if !allDigits(s) {
		return "", fmt.Sprintf("%s %q is not all digits", kind, shorten(s))
	}
	if s[0] == '0' {
		return "", fmt.Sprintf("%s %q starts with 0; Discord IDs never do", kind, shorten(s))
	}
	if len(s) > maxIDDigits {
		return "", fmt.Sprintf("%s has %d digits; a Discord ID has at most %d",
			kind, len(s), maxIDDigits)
	}
	if _, err := strconv.ParseUint(s, 10, 64); err != nil {
		return "", fmt.Sprintf("%s %s is larger than any Discord ID", kind, s)
	}
	return s, ""
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func kindOf(raw []byte) string {
	switch raw[0] {
	case '[':
		return "a list"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	default:
		return "a number"
	}
}

// excerpt compacts raw JSON and cuts it to maxExcerpt bytes on a rune boundary.
func excerpt(raw []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		buf.Reset()
		buf.Write(raw)
	}
	return shorten(strings.ToValidUTF8(buf.String(), "\uFFFD"))
}

func shorten(s string) string {
	if len(s) <= maxExcerpt {
		return s
	}
	cut := maxExcerpt
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
