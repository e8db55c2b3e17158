//! The client side: listening sockets, client connections (read buffer, FIFO of reply slots,
//! write queue), what they speak (`protocol`: parsing requests, writing replies) and a
//! worker's set of them with its limits.

pub mod binary;
pub mod client;
pub mod clients;
pub mod listener;
pub mod protocol;
