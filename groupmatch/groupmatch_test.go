package groupmatch

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func attrs(roleJSON string) json.RawMessage {
	return json.RawMessage(`{"other": 1187654321098765431, "discord_role_id": ` + roleJSON + `}`)
}

func TestBuild_Forms(t *testing.T) {
	tests := []struct {
		name      string
		attrs     json.RawMessage
		wantRoles []string // nil: not managed
		reason    string   // substring of the Invalid reason; "" when not reported
	}{
		// Accepted.
		{name: "string", attrs: attrs(`"1187654321098765431"`), wantRoles: []string{"1187654321098765431"}},
		{name: "string with spaces", attrs: attrs(`"  1187654321098765431 \t"`),
			wantRoles: []string{"1187654321098765431"}},
		{name: "19-digit number kept exactly", attrs: attrs(`1187654321098765431`),
			wantRoles: []string{"1187654321098765431"}},
		{name: "largest uint64 number", attrs: attrs(`18446744073709551615`),
			wantRoles: []string{"18446744073709551615"}},
		{name: "short number", attrs: attrs(`42`), wantRoles: []string{"42"}},
		{name: "list of strings", attrs: attrs(`["300000000000000003", "200000000000000002"]`),
			wantRoles: []string{"200000000000000002", "300000000000000003"}},
		{name: "list of numbers", attrs: attrs(`[1187654321098765431, 1187654321098765432]`),
			wantRoles: []string{"1187654321098765431", "1187654321098765432"}},
		{name: "mixed list", attrs: attrs(`[" 99 ", 1187654321098765431]`),
			wantRoles: []string{"99", "1187654321098765431"}},
		{name: "list with duplicates", attrs: attrs(`["5", 5, " 5"]`), wantRoles: []string{"5"}},

		// Not managed, not reported.
		{name: "attribute absent", attrs: json.RawMessage(`{"colour": "red"}`)},
		{name: "no attributes", attrs: nil},
		{name: "empty object", attrs: json.RawMessage(`{}`)},
		{name: "null attributes", attrs: json.RawMessage(`null`)},
		{name: "key in nested object only", attrs: json.RawMessage(`{"x": {"discord_role_id": "5"}}`)},

		// Refused.
		{name: "object", attrs: attrs(`{"id": "5"}`), reason: "object"},
		{name: "bool", attrs: attrs(`true`), reason: "boolean"},
		{name: "null", attrs: attrs(`null`), reason: "null"},
		{name: "empty string", attrs: attrs(`""`), reason: "empty string"},
		{name: "blank string", attrs: attrs(`"   "`), reason: "empty string"},
		{name: "empty list", attrs: attrs(`[]`), reason: "empty list"},
		{name: "letters", attrs: attrs(`"abc"`), reason: "not all digits"},
		{name: "digits then letter", attrs: attrs(`"12a"`), reason: "not all digits"},
		{name: "negative string", attrs: attrs(`"-5"`), reason: "negative"},
		{name: "fraction string", attrs: attrs(`"1.5"`), reason: "not all digits"},
		{name: "inner space", attrs: attrs(`"123 456"`), reason: "not all digits"},
		{name: "fullwidth digits", attrs: attrs(`"１２３"`), reason: "not all digits"},
		{name: "leading zero string", attrs: attrs(`"0123"`), reason: "starts with 0"},
		{name: "zero", attrs: attrs(`0`), reason: "starts with 0"},
		{name: "fraction number", attrs: attrs(`1.5`), reason: "fraction or exponent"},
		{name: "integral fraction", attrs: attrs(`1187654321098765431.0`), reason: "fraction or exponent"},
		{name: "exponent", attrs: attrs(`1e5`), reason: "fraction or exponent"},
		{name: "huge exponent", attrs: attrs(`1E400`), reason: "fraction or exponent"},
		{name: "negative number", attrs: attrs(`-5`), reason: "negative"},
		{name: "21 digits", attrs: attrs(`"118765432109876543100"`), reason: "21 digits"},
		{name: "21-digit number", attrs: attrs(`118765432109876543100`), reason: "21 digits"},
		{name: "beyond uint64", attrs: attrs(`18446744073709551616`), reason: "larger than any"},
		{name: "list with a bad element", attrs: attrs(`["5", "abc", 6]`),
			reason: "element 2 of 3: string \"abc\" is not all digits (the whole list is refused)"},
		{name: "list with several bad elements", attrs: attrs(`[true, "5", 1.5]`),
			reason: "element 1 of 3: a boolean is not a role ID; element 3 of 3"},
		{name: "nested list", attrs: attrs(`[["5"]]`), reason: "nested list"},
		{name: "list with null", attrs: attrs(`["5", null]`), reason: "element 2 of 2: null"},
		{name: "attributes a list", attrs: json.RawMessage(`["discord_role_id"]`),
			reason: "attributes are a list, not a JSON object"},
		{name: "attributes a string", attrs: json.RawMessage(`"5"`),
			reason: "attributes are a string, not a JSON object"},
		{name: "attributes broken", attrs: json.RawMessage(`{"discord_role_id": "5"`),
			reason: "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := Group{UUID: "uuid-1", Name: "group", Attributes: tt.attrs}
			m := Build([]Group{g}, Options{})

			if diff := cmp.Diff(tt.wantRoles, m.RolesForGroup("uuid-1")); diff != "" {
				t.Errorf("RolesForGroup (-want +got):\n%s", diff)
			}
			if got, want := m.Managed("uuid-1"), tt.wantRoles != nil; got != want {
				t.Errorf("Managed = %v, want %v", got, want)
			}

			inv := m.Invalid()
			if tt.reason == "" {
				if len(inv) != 0 {
					t.Errorf("Invalid = %+v, want none", inv)
				}
				return
			}
			if len(inv) != 1 {
				t.Fatalf("Invalid = %+v, want one entry", inv)
			}
			if !strings.Contains(inv[0].Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", inv[0].Reason, tt.reason)
			}
			if inv[0].GroupUUID != "uuid-1" || inv[0].GroupName != "group" || inv[0].Value == "" {
				t.Errorf("Invalid entry %+v lacks the group or the value", inv[0])
			}
		})
	}
}

func TestBuild_NumberAndStringAgree(t *testing.T) {
	m := Build([]Group{
		{UUID: "u-num", Name: "by number", Attributes: attrs(`1187654321098765431`)},
		{UUID: "u-str", Name: "by string", Attributes: attrs(`"1187654321098765431"`)},
	}, Options{})

	got := m.GroupsForRole("1187654321098765431")
	if diff := cmp.Diff([]string{"u-num", "u-str"}, got); diff != "" {
		t.Errorf("GroupsForRole (-want +got):\n%s", diff)
	}
	// float64 would have turned the number into ...312; that role must not exist.
	if got := m.GroupsForRole("1187654321098765312"); got != nil {
		t.Errorf("rounded ID maps to %v; the number went through float64", got)
	}
	if diff := cmp.Diff([]string{"1187654321098765431"}, m.Roles()); diff != "" {
		t.Errorf("Roles (-want +got):\n%s", diff)
	}
}

func TestBuild_Value(t *testing.T) {
	long := `"` + strings.Repeat("x", 500) + `"`
	m := Build([]Group{
		{UUID: "a", Name: "a", Attributes: attrs(`[ "5",  {"k": true} ]`)},
		{UUID: "b", Name: "b", Attributes: attrs(long)},
	}, Options{})
	inv := m.Invalid()
	if len(inv) != 2 {
		t.Fatalf("Invalid = %+v, want 2", inv)
	}
	if got, want := inv[0].Value, `["5",{"k":true}]`; got != want {
		t.Errorf("Value = %q, want the compacted JSON %q", got, want)
	}
	if got := inv[1].Value; len(got) > maxExcerpt+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("long value not shortened: %d bytes", len(got))
	}
}

func TestBuild_Superuser(t *testing.T) {
	groups := []Group{
		{UUID: "admins", Name: "Authentik Admins", IsSuperuser: true, Attributes: attrs(`"10"`)},
		{UUID: "members", Name: "members", Attributes: attrs(`"10"`)},
		{UUID: "plain-su", Name: "superusers without mapping", IsSuperuser: true},
	}
	tests := []struct {
		name        string
		allow       bool
		wantManaged []string
		wantInvalid []string
	}{
		{name: "refused by default", wantManaged: []string{"members"}, wantInvalid: []string{"admins"}},
		{name: "allowed", allow: true, wantManaged: []string{"admins", "members"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Build(groups, Options{AllowSuperuser: tt.allow})

			if diff := cmp.Diff(tt.wantManaged, m.GroupsForRole("10")); diff != "" {
				t.Errorf("GroupsForRole (-want +got):\n%s", diff)
			}
			var invalid []string
			for _, inv := range m.Invalid() {
				invalid = append(invalid, inv.GroupUUID)
				if !strings.Contains(inv.Reason, "BRIDGE_ALLOW_SUPERUSER_GROUPS") {
					t.Errorf("reason %q does not name BRIDGE_ALLOW_SUPERUSER_GROUPS", inv.Reason)
				}
			}
			if diff := cmp.Diff(tt.wantInvalid, invalid); diff != "" {
				t.Errorf("Invalid groups (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBuild_DuplicateAndMissingUUID(t *testing.T) {
	m := Build([]Group{
		{UUID: "dup", Name: "first", Attributes: attrs(`"1"`)},
		{UUID: "dup", Name: "second", Attributes: attrs(`"2"`)},
		{UUID: "", Name: "no uuid", Attributes: attrs(`"3"`)},
		{UUID: "ok", Name: "ok", Attributes: attrs(`"4"`)},
	}, Options{})

	if diff := cmp.Diff([]string{"4"}, m.Roles()); diff != "" {
		t.Errorf("Roles (-want +got):\n%s", diff)
	}
	var names []string
	for _, inv := range m.Invalid() {
		names = append(names, inv.GroupName)
	}
	if diff := cmp.Diff([]string{"first", "no uuid", "second"}, names); diff != "" {
		t.Errorf("Invalid (-want +got):\n%s", diff)
	}
}

// guild is a mapping where one role feeds several groups and one group takes several roles.
func guild() []Group {
	return []Group{
		{UUID: "u-mods", Name: "moderators", Attributes: attrs(`["100", 200]`)},
		{UUID: "u-members", Name: "members", Attributes: attrs(`"300"`)},
		{UUID: "u-staff", Name: "Staff", Attributes: attrs(`100`)},
		{UUID: "u-vip", Name: "vip", Attributes: attrs(`["400", "300"]`)},
		{UUID: "u-unmanaged", Name: "unmanaged", Attributes: json.RawMessage(`{"x": 1}`)},
		{UUID: "u-broken", Name: "broken", Attributes: attrs(`"4OO"`)},
	}
}

func TestMapping_Desired(t *testing.T) {
	m := Build(guild(), Options{})
	tests := []struct {
		name  string
		roles []string
		want  map[string]bool
	}{
		{"no roles", nil, map[string]bool{}},
		{"unmapped role", []string{"999"}, map[string]bool{}},
		{"role feeding two groups", []string{"100"}, map[string]bool{"u-mods": true, "u-staff": true}},
		{"two roles of one group", []string{"100", "200"}, map[string]bool{"u-mods": true, "u-staff": true}},
		{"role shared by groups", []string{"300"}, map[string]bool{"u-members": true, "u-vip": true}},
		{"several roles", []string{"200", "400", "999"}, map[string]bool{"u-mods": true, "u-vip": true}},
		{"broken mapping feeds nothing", []string{"4OO", "4"}, map[string]bool{}},
		{"ids are exact", []string{" 100", "0100"}, map[string]bool{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, m.Desired(tt.roles)); diff != "" {
				t.Errorf("Desired(%v) (-want +got):\n%s", tt.roles, diff)
			}
		})
	}
}

func TestMapping_Accessors(t *testing.T) {
	m := Build(guild(), Options{})

	var names []string
	for _, g := range m.ManagedGroups() {
		names = append(names, g.Name)
	}
	if diff := cmp.Diff([]string{"Staff", "members", "moderators", "vip"}, names); diff != "" {
		t.Errorf("ManagedGroups (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"100", "200", "300", "400"}, m.Roles()); diff != "" {
		t.Errorf("Roles (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"u-staff", "u-mods"}, m.GroupsForRole("100")); diff != "" {
		t.Errorf("GroupsForRole(100) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"300", "400"}, m.RolesForGroup("u-vip")); diff != "" {
		t.Errorf("RolesForGroup(u-vip) (-want +got):\n%s", diff)
	}
	if g, ok := m.Group("u-vip"); !ok || g.Name != "vip" {
		t.Errorf("Group(u-vip) = %+v, %v", g, ok)
	}
	for _, uuid := range []string{"u-unmanaged", "u-broken", "nope"} {
		if _, ok := m.Group(uuid); ok || m.Managed(uuid) {
			t.Errorf("%s reported as managed", uuid)
		}
	}
	if inv := m.Invalid(); len(inv) != 1 || inv[0].GroupUUID != "u-broken" {
		t.Errorf("Invalid = %+v, want only u-broken", inv)
	}

	// Returned slices are copies: changing them must not change the mapping.
	m.Roles()[0] = "x"
	m.GroupsForRole("100")[0] = "x"
	m.ManagedGroups()[0].Name = "x"
	if m.Roles()[0] != "100" || m.GroupsForRole("100")[0] != "u-staff" ||
		m.ManagedGroups()[0].Name != "Staff" {
		t.Error("a returned slice aliases the mapping's state")
	}
}

func TestBuild_Deterministic(t *testing.T) {
	groups := guild()
	first := Build(groups, Options{})
	reversed := make([]Group, len(groups))
	for i, g := range groups {
		reversed[len(groups)-1-i] = g
	}
	second := Build(reversed, Options{})

	opt := cmp.AllowUnexported(Mapping{})
	if diff := cmp.Diff(first, second, opt); diff != "" {
		t.Errorf("input order changed the mapping (-first +second):\n%s", diff)
	}
}

func TestMapping_Nil(t *testing.T) {
	var m *Mapping
	if m.Managed("x") || m.Roles() != nil || m.Invalid() != nil || m.ManagedGroups() != nil ||
		m.GroupsForRole("1") != nil || m.RolesForGroup("x") != nil {
		t.Error("nil mapping reports something")
	}
	if d := m.Desired([]string{"1"}); d == nil || len(d) != 0 {
		t.Errorf("nil mapping Desired = %v, want an empty map", d)
	}
}

func FuzzBuild(f *testing.F) {
	seeds := []string{
		`"1187654321098765431"`, `1187654321098765431`, `["1", 2, " 3 "]`, `[]`, `""`, `null`,
		`true`, `{"a":1}`, `1.5`, `1e5`, `-5`, `"0"`, `"118765432109876543100"`, `[["1"]]`,
		`18446744073709551616`,
	}
	for _, s := range seeds {
		f.Add([]byte(`{"discord_role_id": `+s+`}`), false, false)
	}
	f.Add([]byte(`[1,2]`), true, false)
	f.Add([]byte(`{"discord_role_id": "5"}`), true, true)

	f.Fuzz(func(t *testing.T, data []byte, superuser, allow bool) {
		groups := []Group{
			{UUID: "a", Name: "raw", IsSuperuser: superuser, Attributes: data},
			{UUID: "b", Name: "wrapped", Attributes: json.RawMessage(
				fmt.Sprintf(`{"discord_role_id": %s}`, data))},
		}
		m := Build(groups, Options{AllowSuperuser: allow})

		for _, r := range m.Roles() {
			if !allDigits(r) || len(r) > maxIDDigits || r[0] == '0' {
				t.Fatalf("managed role ID %q is not a Discord ID", r)
			}
		}
		all := map[string]bool{}
		for _, g := range m.ManagedGroups() {
			all[g.UUID] = true
			if len(m.RolesForGroup(g.UUID)) == 0 {
				t.Fatalf("managed group %s has no roles", g.UUID)
			}
		}
		for _, inv := range m.Invalid() {
			if m.Managed(inv.GroupUUID) {
				t.Fatalf("group %s is both managed and invalid", inv.GroupUUID)
			}
			if inv.Reason == "" {
				t.Fatalf("invalid group %s has no reason", inv.GroupUUID)
			}
		}
		if diff := cmp.Diff(all, m.Desired(m.Roles())); diff != "" {
			t.Fatalf("Desired(every role) is not every managed group:\n%s", diff)
		}
	})
}

func benchGroups(n int) []Group {
	groups := make([]Group, n)
	for i := range groups {
		id := 1187654321098765431 + uint64(i)
		var a string
		switch i % 4 {
		case 0:
			a = fmt.Sprintf(`"%d"`, id)
		case 1:
			a = fmt.Sprintf(`%d`, id)
		case 2:
			a = fmt.Sprintf(`["%d", %d]`, id, id+1)
		default:
			groups[i] = Group{UUID: fmt.Sprintf("u-%d", i), Name: fmt.Sprintf("group %d", i),
				Attributes: json.RawMessage(`{"colour": "red", "size": 3}`)}
			continue
		}
		groups[i] = Group{
			UUID:       fmt.Sprintf("u-%d", i),
			Name:       fmt.Sprintf("group %d", i),
			Attributes: json.RawMessage(`{"note": "x", "discord_role_id": ` + a + `, "n": 12}`),
		}
	}
	return groups
}

func BenchmarkBuild(b *testing.B) {
	groups := benchGroups(500)
	b.ReportAllocs()
	for b.Loop() {
		Build(groups, Options{})
	}
}

func BenchmarkDesired(b *testing.B) {
	m := Build(benchGroups(500), Options{})
	roles := m.Roles()
	member := make([]string, 0, 20)
	for i := 0; i < len(roles) && len(member) < 20; i += 17 {
		member = append(member, roles[i])
	}
	b.ReportAllocs()
	for b.Loop() {
		m.Desired(member)
	}
}

func TestBuild_SuperuserThroughAncestor(t *testing.T) {
	groups := []Group{
		{UUID: "root", Name: "authentik Admins", IsSuperuser: true, Attributes: json.RawMessage(`{}`)},
		{UUID: "mid", Name: "staff", Parents: []string{"root"}, Attributes: json.RawMessage(`{}`)},
		{UUID: "leaf", Name: "makerspace-admins", Parents: []string{"mid"},
			Attributes: json.RawMessage(`{"discord_role_id":"1187654321098765431"}`)},
		{UUID: "loop-a", Name: "loop-a", Parents: []string{"loop-b"},
			Attributes: json.RawMessage(`{"discord_role_id":"1"}`)},
		{UUID: "loop-b", Name: "loop-b", Parents: []string{"loop-a"}, Attributes: json.RawMessage(`{}`)},
	}
	m := Build(groups, Options{})
	if m.Managed("leaf") {
		t.Error("a group under a superuser ancestor is managed")
	}
	if inv := m.Invalid(); len(inv) != 1 || !strings.Contains(inv[0].Reason, `"authentik Admins"`) {
		t.Errorf("Invalid = %+v, want one entry naming the superuser ancestor", inv)
	}
	if !m.Managed("loop-a") {
		t.Error("a parent cycle without a superuser refused the group")
	}
	if m := Build(groups, Options{AllowSuperuser: true}); !m.Managed("leaf") {
		t.Error("AllowSuperuser did not admit the group")
	}
}
