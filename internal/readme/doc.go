// Package readme holds the test that keeps the README's Go code compiling.
package readme
