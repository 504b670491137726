//! Integration tests over real sockets on 127.0.0.1: one binary, one module per topic.

mod admin;
mod browser;
mod cli;
mod debugger;
mod kinds;
mod lifecycle;
mod live;
mod operator;
mod scenarios;
mod scripts;
mod suites;
mod support;
mod traces;
