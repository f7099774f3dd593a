package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// callAPI GETs api and prints the status and the email and name fields of
// the JSON answer.
func callAPI(ctx context.Context, client *http.Client, api string, stdout io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	fmt.Fprintf(stdout, "GET %s: %s\n", api, resp.Status)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the API answered %s", resp.Status)
	}
	var who struct {
		Email string `json:"email"`
		Name  string `json:"name"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&who); err != nil {
		return fmt.Errorf("the API's answer is not JSON: %w", err)
	}
	fmt.Fprintf(stdout, "email: %s\nname:  %s\n", orNone(who.Email), orNone(who.Name))
	return nil
}

// orNone shows an absent field.
func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
