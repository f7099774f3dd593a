package sessions_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/tokensource/sessions"
)

func ExampleSet() {
	// In a real program: tokensource.NewConfigRefresher for your provider,
	// and a storage.File or redisstore store.
	refresher := tokensource.RefresherFunc(func(ctx context.Context, t *oauth2.Token) (*oauth2.Token, error) {
		if t == nil {
			return nil, &oauth2.RetrieveError{ErrorCode: "invalid_grant"} // no session stored
		}
		return &oauth2.Token{AccessToken: "new", RefreshToken: t.RefreshToken, Expiry: time.Now().Add(time.Hour)}, nil
	})
	set, err := sessions.New(sessions.Config{Refresher: refresher, Store: storage.NewMemory()})
	if err != nil {
		log.Fatal(err)
	}
	defer set.Close()

	ctx := context.Background()
	for _, user := range []string{"bob", "alice"} {
		// After each user's login:
		login := &oauth2.Token{AccessToken: "first", RefreshToken: "r-" + user, Expiry: time.Now().Add(time.Hour)}
		if err := set.Put(ctx, user, login); err != nil {
			log.Fatal(err)
		}
	}
	client, err := set.Client(ctx, "alice") // an *http.Client that sends alice's token
	if err != nil {
		log.Fatal(err)
	}
	_ = client
	fmt.Println(set.List())

	_, err = set.Client(ctx, "carol")
	fmt.Println("carol must log in:", errors.Is(err, tokensource.ErrReauthRequired))
	// Output:
	// [alice bob]
	// carol must log in: true
}
