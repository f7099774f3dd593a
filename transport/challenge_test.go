package transport_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tokenkeep/tokenkeep/transport"
)

type params = map[string]string

func TestParseChallenges(t *testing.T) {
	tests := []struct {
		name   string
		header []string
		want   []transport.Challenge
	}{
		{"none", nil, nil},
		{"empty", []string{"", " , ,"}, nil},
		{"scheme only", []string{"Bearer"}, []transport.Challenge{{Scheme: "Bearer"}}},
		{"rfc 6750", []string{`Bearer realm="example", error="invalid_token", error_description="The access token expired"`},
			[]transport.Challenge{{Scheme: "Bearer", Params: params{"realm": "example", "error": "invalid_token", "error_description": "The access token expired"}}}},
		{"rfc 9110 example", []string{`Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"`},
			[]transport.Challenge{
				{Scheme: "Newauth", Params: params{"realm": "apps", "type": "1", "title": `Login to "apps"`}},
				{Scheme: "Basic", Params: params{"realm": "simple"}},
			}},
		{"token68", []string{"Negotiate YII=, Basic", "Foo a/b+c~d.e-f_g=="},
			[]transport.Challenge{{Scheme: "Negotiate", Token68: "YII="}, {Scheme: "Basic"}, {Scheme: "Foo", Token68: "a/b+c~d.e-f_g=="}}},
		{"token68 trailing space", []string{"Negotiate abc  , Bearer"},
			[]transport.Challenge{{Scheme: "Negotiate", Token68: "abc"}, {Scheme: "Bearer"}}},
		{"case-insensitive names", []string{`BEARER Realm="x", ERROR=invalid_token`},
			[]transport.Challenge{{Scheme: "BEARER", Params: params{"realm": "x", "error": "invalid_token"}}}},
		{"whitespace around equals", []string{"Bearer  realm = \"x\" ,\terror\t=\tinvalid_token"},
			[]transport.Challenge{{Scheme: "Bearer", Params: params{"realm": "x", "error": "invalid_token"}}}},
		{"empty list elements", []string{`,Basic realm="a",, , Bearer error="e",`},
			[]transport.Challenge{{Scheme: "Basic", Params: params{"realm": "a"}}, {Scheme: "Bearer", Params: params{"error": "e"}}}},
		{"schemes without params", []string{"Basic, Bearer ,Digest"},
			[]transport.Challenge{{Scheme: "Basic"}, {Scheme: "Bearer"}, {Scheme: "Digest"}}},
		{"comma in quoted string", []string{`Bearer realm="a, b=c", error="x"`},
			[]transport.Challenge{{Scheme: "Bearer", Params: params{"realm": "a, b=c", "error": "x"}}}},
		{"escapes", []string{`Bearer a="\\", b="\"", c="\x\y", d=""`},
			[]transport.Challenge{{Scheme: "Bearer", Params: params{"a": `\`, "b": `"`, "c": "xy", "d": ""}}}},
		{"duplicate param keeps first", []string{`Bearer error="invalid_token", Error="other"`},
			[]transport.Challenge{{Scheme: "Bearer", Params: params{"error": "invalid_token"}}}},
		{"unterminated quote", []string{`Bearer realm="abc, error="x`},
			[]transport.Challenge{{Scheme: "Bearer", Params: params{"realm": "abc, error="}}}},
		{"trailing backslash", []string{`Bearer realm="abc\`},
			[]transport.Challenge{{Scheme: "Bearer", Params: params{"realm": "abc"}}}},
		{"several headers", []string{`Basic realm="a"`, `Bearer error="invalid_token"`},
			[]transport.Challenge{{Scheme: "Basic", Params: params{"realm": "a"}}, {Scheme: "Bearer", Params: params{"error": "invalid_token"}}}},
		{"garbage skipped", []string{`"quoted", Bearer realm="x" junk, error="e", =, @@, Basic`},
			[]transport.Challenge{{Scheme: "Bearer", Params: params{"realm": "x", "error": "e"}}, {Scheme: "Basic"}}},
		{"missing value", []string{`Bearer realm="x", error=, Basic`},
			[]transport.Challenge{{Scheme: "Bearer", Params: params{"realm": "x", "error": ""}}, {Scheme: "Basic"}}},
		{"token68 not params", []string{`Bearer realm=, error="e", Basic`},
			[]transport.Challenge{{Scheme: "Bearer", Token68: "realm="}, {Scheme: "Basic"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := transport.ParseChallenges(tt.header)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseChallenges(%q)\n got %#v\nwant %#v", tt.header, got, tt.want)
			}
		})
	}
}

// format writes challenges back as one header value, quoting every
// parameter value.
func format(cs []transport.Challenge) string {
	var b strings.Builder
	for i, c := range cs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.Scheme)
		if c.Token68 != "" {
			b.WriteString(" " + c.Token68)
		}
		names := make([]string, 0, len(c.Params))
		for k := range c.Params {
			names = append(names, k)
		}
		slices.Sort(names)
		for j, k := range names {
			if j == 0 {
				b.WriteString(" ")
			} else {
				b.WriteString(", ")
			}
			b.WriteString(k + `="`)
			b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(c.Params[k]))
			b.WriteString(`"`)
		}
	}
	return b.String()
}

func isTchar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isToken(s string) bool {
	for i := range len(s) {
		if !isTchar(s[i]) {
			return false
		}
	}
	return s != ""
}

// FuzzParseChallenges checks that the parser never panics, that what it
// returns is well formed, and that formatting and parsing again gives the
// same challenges.
func FuzzParseChallenges(f *testing.F) {
	for _, s := range []string{
		``,
		`Bearer`,
		`Bearer realm="example", error="invalid_token", error_description="expired"`,
		`Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"`,
		`Negotiate YII=, Basic realm="x"`,
		`Bearer realm="a, b=c", error=x,, ,`,
		`Bearer realm="unterminated\`,
		`"quoted", Bearer x="y" junk, =, @@`,
		"Bearer\trealm\t=\t\"x\"\r\n",
		`Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"`,
		"Bearer a=b=c, d==, e=\"\xff\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		got := transport.ParseChallenges([]string{header})
		for _, c := range got {
			if !isToken(c.Scheme) {
				t.Fatalf("scheme %q is not a token", c.Scheme)
			}
			if c.Token68 != "" && c.Params != nil {
				t.Fatalf("challenge %q has both token68 and params", c.Scheme)
			}
			for k := range c.Params {
				if !isToken(k) || k != strings.ToLower(k) {
					t.Fatalf("param name %q is not a lower-case token", k)
				}
			}
		}
		again := transport.ParseChallenges([]string{format(got)})
		if !reflect.DeepEqual(got, again) {
			t.Fatalf("parse, format, parse changed the challenges:\n got %#v\nthen %#v\nfrom %q", got, again, format(got))
		}
	})
}
