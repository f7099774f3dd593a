// Package secrettest checks that values which hold or reach a secret do not
// print it: it renders a value through every fmt verb that prints a value
// whole and through slog's text and JSON handlers, and looks for the secret
// in each text, as written and as fmt, hex or base64 would encode it.
package secrettest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// Verbs are the fmt verbs a value is rendered with.
var Verbs = []string{"%v", "%+v", "%#v", "%s", "%q", "%x"}

// Render returns v as each of Verbs prints it and as slog's text and JSON
// handlers log it, alone and as the field of a struct, labelled by how it
// was rendered.
func Render(v any) map[string]string {
	out := make(map[string]string)
	nested := struct{ V any }{v}
	for _, verb := range Verbs {
		out[verb] = fmt.Sprintf(verb, v)
		out[verb+" in a struct"] = fmt.Sprintf(verb, nested)
	}
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"slog text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"slog JSON": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		l := slog.New(h(&b))
		l.Info("value", "v", v)
		l.Info("group", slog.Group("g", slog.Any("v", v)))
		l.Info("struct", "s", nested)
		out[name] = b.String()
	}
	return out
}

// Forms returns the strings that betray secret in printed text: secret
// itself, and its hex, base64 and fmt renderings as a byte slice. Base64 is
// given at each of its three alignments, so that a secret inside a longer
// encoded value is found too.
func Forms(secret []byte) []string {
	if len(secret) == 0 {
		return nil
	}
	forms := []string{
		string(secret),
		fmt.Sprintf("%q", secret),
		hex.EncodeToString(secret),
		strings.ToUpper(hex.EncodeToString(secret)),
		strings.Trim(fmt.Sprint(secret), "[]"),                   // 1 2 3
		strings.TrimPrefix(fmt.Sprintf("%#v", secret), "[]byte"), // {0x1, 0x2}
	}
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		for pad := range 3 {
			s := enc.EncodeToString(append(make([]byte, pad), secret...))
			// Drop the characters that depend on what precedes the
			// secret, and the last one, which depends on what follows.
			s = s[(pad*8+5)/6 : len(s)-1]
			if len(s) >= 8 {
				forms = append(forms, s)
			}
		}
	}
	return forms
}

// NoSecret fails t if any rendering of v holds any form of any of secrets.
// name says which value it is.
func NoSecret(t testing.TB, name string, v any, secrets ...[]byte) {
	t.Helper()
	for how, text := range Render(v) {
		for _, s := range secrets {
			for _, form := range Forms(s) {
				if strings.Contains(text, form) {
					t.Errorf("%s printed with %s shows a secret (%.4s…): %s", name, how, form, text)
				}
			}
		}
	}
}
