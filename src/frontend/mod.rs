//! The client side: listening sockets, client connections (read buffer, parser, FIFO of reply
//! slots, write queue) and a worker's set of them with its limits.

pub mod client;
pub mod clients;
pub mod listener;
