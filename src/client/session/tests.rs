//! Socket-free tests of the session core: client messages in, a scripted server's
//! answers in, and checks of what each side receives and how the state moves.
