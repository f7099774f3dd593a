package storage_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// A file store for a headless job, its key taken from the environment.
func ExampleNewFile() {
	os.Setenv("MYAPP_TOKEN_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=") // e.g. from a secret manager
	key, err := storage.KeyFromEnv("MYAPP_TOKEN_KEY")
	if err != nil {
		log.Fatal(err)
	}
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	store, err := storage.NewFile(filepath.Join(dir, "tokens"), key)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if _, err := store.Load(ctx, "alice"); errors.Is(err, storage.ErrNotFound) {
		fmt.Println("nothing stored yet")
	}
	tok := (&oauth2.Token{AccessToken: "at", RefreshToken: "rt"}).WithExtra(map[string]any{"scope": "openid"})
	// The first record of an entry follows generation 0.
	if err := store.Save(ctx, "alice", storage.NewRecord(0, tok)); err != nil {
		log.Fatal(err)
	}
	got, err := store.Load(ctx, "alice")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("generation:", got.Generation, "scope:", got.Token.Extra("scope"))
	// A writer that started from generation 0 too has fallen behind.
	err = store.Save(ctx, "alice", storage.NewRecord(0, tok))
	fmt.Println("stale write refused:", errors.Is(err, storage.ErrConflict))
	fi, _ := os.Stat(store.Path("alice"))
	fmt.Printf("mode: %v\n", fi.Mode().Perm())
	// Output:
	// nothing stored yet
	// generation: 1 scope: openid
	// stale write refused: true
	// mode: -rw-------
}
