package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoad_AppRoles(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		want     []AppRole
		problems []string // substrings, one per expected problem
	}{
		{name: "unset", raw: "<unset>"},
		{name: "one role", raw: "admin=group-a",
			want: []AppRole{{Name: "admin", Groups: []string{"group-a"}}}},
		{name: "several roles with spaces and trailing separator",
			raw: " admin = group-a , group b ;editor=group-c;",
			want: []AppRole{
				{Name: "admin", Groups: []string{"group-a", "group b"}},
				{Name: "editor", Groups: []string{"group-c"}},
			}},
		{name: "missing equals", raw: "admin", problems: []string{`entry 1 "admin" has no "="`}},
		{name: "empty role name", raw: "=group-a", problems: []string{"empty role name"}},
		{name: "no groups", raw: "admin=;editor=g", problems: []string{`entry 1 "admin=": no groups`}},
		{name: "empty group", raw: "admin=a,,b", problems: []string{"empty group name"}},
		{name: "duplicate role", raw: "admin=a;admin=b", problems: []string{`role "admin" is given twice`}},
		{name: "duplicate group", raw: "admin=a,a", problems: []string{`group "a" listed twice`}},
		{name: "every problem reported", raw: "admin;=x;editor=;viewer=a,,a",
			problems: []string{
				`entry 1 "admin" has no "="`,
				`entry 2 "=x": empty role name`,
				`entry 3 "editor=": no groups`,
				`entry 4 "viewer=a,,a": empty group name`,
				`entry 4 "viewer=a,,a": group "a" listed twice`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(lookupIn(with(minimalEnv(), map[string]string{"BRIDGE_APP_ROLES": tt.raw})))

			if len(tt.problems) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if diff := cmp.Diff(tt.want, cfg.AppRoles); diff != "" {
					t.Errorf("AppRoles (-want +got):\n%s", diff)
				}
				return
			}
			vars := problemVars(t, err)
			if len(vars) != len(tt.problems) {
				t.Fatalf("got %d problems, want %d:\n%v", len(vars), len(tt.problems), err)
			}
			for _, v := range vars {
				if v != "BRIDGE_APP_ROLES" {
					t.Errorf("problem names %s, want BRIDGE_APP_ROLES", v)
				}
			}
			for _, p := range tt.problems {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error does not mention %q:\n%v", p, err)
				}
			}
		})
	}
}

func TestFormatAppRoles_RoundTrip(t *testing.T) {
	roles := []AppRole{
		{Name: "admin", Groups: []string{"group-a", "group b"}},
		{Name: "editor", Groups: []string{"group-c"}},
	}
	got, err := parseAppRoles(formatAppRoles(roles))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(roles, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}
