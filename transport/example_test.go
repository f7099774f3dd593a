package transport_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/transport"
)

func ExampleNewClient() {
	// An in-process provider stands in for a real one.
	srv := authserver.New(authserver.Config{Rotate: true})
	defer srv.Close()

	refresher, err := tokensource.NewConfigRefresher(srv.OAuth2Config(), srv.RevocationURL(), srv.Client())
	if err != nil {
		log.Fatal(err)
	}
	src, err := tokensource.New(refresher, storage.NewMemory(), "alice")
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	if err := src.Put(context.Background(), srv.Mint()); err != nil { // as after a login
		log.Fatal(err)
	}

	client := transport.NewClient(src)
	get := func() {
		resp, err := client.Get(srv.ResourceURL())
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		var who struct{ Sub string }
		json.NewDecoder(resp.Body).Decode(&who)
		fmt.Println(resp.Status, who.Sub)
	}
	get()

	// The provider ends the access token early. The server answers 401, and
	// the client refreshes and sends the request again.
	srv.ExpireAccessTokens()
	get()
	fmt.Println("refreshes:", srv.Stats().RefreshGrants)

	// Output:
	// 200 OK alice
	// 200 OK alice
	// refreshes: 1
}
