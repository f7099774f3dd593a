package redisstore_test

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/storage/redisstore"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// A fleet of workers shares one session through Redis: every worker runs
// this with the same address, prefix and key (here from TOKENKEEP_KEY, 32
// bytes in hex or base64), and only one of them redeems each refresh token.
func Example() {
	key, err := storage.KeyFromEnv("TOKENKEEP_KEY")
	if err != nil {
		log.Fatal(err)
	}
	// A single node here; a Sentinel or Cluster address list works the same.
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:    []string{"redis.internal:6379"},
		Username: "tokens",
		Password: os.Getenv("REDIS_PASSWORD"),
	})
	defer client.Close()
	store, err := redisstore.New(client, key, &redisstore.Options{
		Prefix:   "billing:",
		LeaseTTL: 15 * time.Second, // well above the provider's slowest answer
	})
	if err != nil {
		log.Fatal(err)
	}
	cfg := &oauth2.Config{ /* the provider's client and endpoint */ }
	r, err := tokensource.NewConfigRefresher(cfg, "", nil)
	if err != nil {
		log.Fatal(err)
	}
	src, err := tokensource.New(r, store, "billing-api", tokensource.WithLockTimeout(20*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	tok, err := src.TokenContext(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	_ = tok // use it, or wrap src in an oauth2.Transport
}
