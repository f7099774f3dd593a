package transport

import "strings"

// Challenge is one authentication challenge of a WWW-Authenticate or
// Proxy-Authenticate header (RFC 9110, section 11.6.1), such as
//
//	Bearer realm="example", error="invalid_token"
type Challenge struct {
	// Scheme is the authentication scheme as sent. Schemes are
	// case-insensitive: compare them with strings.EqualFold.
	Scheme string

	// Token68 is the challenge's single token68 value, which some schemes
	// (Negotiate, for one) send instead of parameters. It is empty when the
	// challenge has parameters.
	Token68 string

	// Params holds the auth-params by lower-cased name, with quoted values
	// unquoted. A name that occurs twice keeps its first value. Params is
	// nil when the challenge has none.
	Params map[string]string
}

// ParseChallenges parses the values of WWW-Authenticate (or
// Proxy-Authenticate) header fields, as returned by http.Header.Values, into
// the challenges they hold, in order. One value may hold several challenges
// separated by commas.
//
// ParseChallenges is lenient: it skips what it cannot parse and keeps the
// challenges around it, takes an unterminated quoted-string to run to the
// end of the value, and never panics.
func ParseChallenges(header []string) []Challenge {
	var cs []Challenge
	for _, v := range header {
		p := parser{s: v}
		cs = p.challenges(cs)
	}
	return cs
}

// parser reads one header value. Its methods advance i past what they read.
type parser struct {
	s string
	i int
}

// challenges appends the challenges of p's value to cs.
func (p *parser) challenges(cs []Challenge) []Challenge {
	for {
		p.skipSeparators()
		if p.i == len(p.s) {
			return cs
		}
		scheme := p.token()
		if scheme == "" {
			p.skipElement()
			continue
		}
		c := Challenge{Scheme: scheme}
		switch {
		case p.skipSpace():
			if t, ok := p.token68(); ok {
				c.Token68 = t
			} else {
				c.Params = p.params()
			}
		case p.i < len(p.s) && p.s[p.i] != ',':
			p.skipElement() // not a scheme: a stray parameter, say
			continue
		}
		cs = append(cs, c)
	}
}

// token68 reads a token68 that makes up the rest of a challenge: it must be
// followed by the end of the value or a comma. If there is none, it reads
// nothing.
func (p *parser) token68() (string, bool) {
	j := p.i
	for j < len(p.s) && isToken68(p.s[j]) {
		j++
	}
	if j == p.i {
		return "", false
	}
	for j < len(p.s) && p.s[j] == '=' {
		j++
	}
	k := j
	for k < len(p.s) && isSpace(p.s[k]) {
		k++
	}
	if k < len(p.s) && p.s[k] != ',' {
		return "", false
	}
	t := p.s[p.i:j]
	p.i = k
	return t, true
}

// params reads a comma-separated list of auth-params. It stops, without
// reading it, at a token not followed by "=": the scheme of the next
// challenge.
func (p *parser) params() map[string]string {
	var m map[string]string
	for {
		p.skipSeparators()
		start := p.i
		name := p.token()
		if name == "" {
			return m
		}
		p.skipSpace()
		if p.i == len(p.s) || p.s[p.i] != '=' {
			p.i = start
			return m
		}
		p.i++
		p.skipSpace()
		var v string
		if p.i < len(p.s) && p.s[p.i] == '"' {
			v = p.quoted()
		} else {
			v = p.token()
		}
		if m == nil {
			m = make(map[string]string)
		}
		name = strings.ToLower(name)
		if _, dup := m[name]; !dup {
			m[name] = v
		}
		p.skipSpace()
		if p.i < len(p.s) && p.s[p.i] != ',' {
			p.skipElement()
		}
	}
}

// token reads a token (RFC 9110, section 5.6.2), possibly empty.
func (p *parser) token() string {
	j := p.i
	for j < len(p.s) && isTchar(p.s[j]) {
		j++
	}
	t := p.s[p.i:j]
	p.i = j
	return t
}

// quoted reads a quoted-string, which starts at p.i, and returns it
// unquoted. A backslash escapes the byte after it.
func (p *parser) quoted() string {
	p.i++ // the opening quote
	start := p.i
	for j := start; j < len(p.s); j++ {
		switch p.s[j] {
		case '"':
			p.i = j + 1
			return p.s[start:j]
		case '\\':
			return p.unescape(start)
		}
	}
	p.i = len(p.s)
	return p.s[start:]
}

// unescape reads the rest of a quoted-string that has quoted-pairs, from
// start just after its opening quote.
func (p *parser) unescape(start int) string {
	var b strings.Builder
	j := start
	for j < len(p.s) {
		c := p.s[j]
		switch {
		case c == '"':
			p.i = j + 1
			return b.String()
		case c == '\\' && j+1 < len(p.s):
			b.WriteByte(p.s[j+1])
			j += 2
		case c == '\\':
			j++ // a trailing backslash escapes nothing
		default:
			b.WriteByte(c)
			j++
		}
	}
	p.i = len(p.s)
	return b.String()
}

// skipElement skips what cannot be parsed, up to the next comma outside a
// quoted-string. It always reads at least one byte.
func (p *parser) skipElement() {
	if p.i < len(p.s) && p.s[p.i] != '"' {
		p.i++
	}
	for p.i < len(p.s) && p.s[p.i] != ',' {
		if p.s[p.i] == '"' {
			p.quoted()
			continue
		}
		p.i++
	}
}

// skipSpace skips spaces and tabs and reports whether there were any.
func (p *parser) skipSpace() bool {
	start := p.i
	for p.i < len(p.s) && isSpace(p.s[p.i]) {
		p.i++
	}
	return p.i > start
}

// skipSeparators skips list separators: commas, spaces and tabs.
func (p *parser) skipSeparators() {
	for p.i < len(p.s) && (p.s[p.i] == ',' || isSpace(p.s[p.i])) {
		p.i++
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// isTchar reports whether c may appear in a token (RFC 9110, section 5.6.2).
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isToken68 reports whether c may appear in a token68 before its padding
// (RFC 9110, section 11.2).
func isToken68(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
}
