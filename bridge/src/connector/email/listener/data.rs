//! The mail text after `DATA` (RFC 5321 §4.5.2), rebuilt from the pieces the connection
//! reads: dot-unstuffed, every line ended with CRLF, and never held past the size limit.
//! Pure: it is fed bytes and says when the mail has ended.

/// How much more than the size limit is read and thrown away, so that the sender still gets
/// its 552 at the end (RFC 1870 §6.3), before the connection is closed instead: a client that
/// never stops sending must not hold a connection for ever.
const DISCARD_FACTOR: usize = 4;

/// One mail being received.
#[derive(Debug)]
pub(super) struct DataReader {
    max: usize,
    body: Vec<u8>,
    /// Octets of the mail as stored (unstuffed, CRLF line ends), kept or not.
    size: usize,
    /// The next byte starts a line.
    at_line_start: bool,
    /// The last line ended with CRLF (the `DATA` command counts as one).
    prev_crlf: bool,
    /// A piece ended with CR and the next may start with the LF that completes it.
    carry_cr: bool,
}

/// What the reader needs next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    More,
    /// The lone dot arrived: [`DataReader::finish`] gives the mail.
    End,
    /// Far past the limit: stop reading, answer 552 and close.
    Abort,
}

/// The mail was larger than the limit; its bytes were not kept.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TooLarge;

impl DataReader {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            body: Vec::new(),
            size: 0,
            at_line_start: true,
            prev_crlf: true,
            carry_cr: false,
        }
    }

    /// Takes the next piece the connection read: a whole line (`complete`, ending with LF),
    /// or the start or middle of a long line (not ending with LF).
    ///
    /// The mail ends only at CRLF `.` CRLF. A line ending with a bare LF is taken as if it
    /// ended with CRLF (broken clients send them), but a lone dot before or after a bare LF
    /// does not end the mail: the MTA that relayed this mail may not have read it as an end,
    /// and taking it as one would let a sender smuggle a second mail inside the first
    /// ("SMTP smuggling", 2023). Such a dot is kept as a line of the mail.
    pub(super) fn push(&mut self, piece: &[u8], complete: bool) -> Progress {
        let joined;
        let mut bytes = piece;
        if std::mem::take(&mut self.carry_cr) {
            joined = [b"\r", piece].concat();
            bytes = &joined;
        }
        if !complete && bytes.last() == Some(&b'\r') {
            self.carry_cr = true;
            bytes = &bytes[..bytes.len() - 1];
        }
        if bytes.is_empty() {
            return Progress::More;
        }
        if complete && self.at_line_start && self.prev_crlf && bytes == b".\r\n" {
            return Progress::End;
        }
        if self.at_line_start && bytes[0] == b'.' {
            bytes = &bytes[1..];
        }
        if complete {
            let (text, crlf) = match bytes.strip_suffix(b"\r\n") {
                Some(text) => (text, true),
                None => (&bytes[..bytes.len() - 1], false),
            };
            self.append(text);
            self.append(b"\r\n");
            self.prev_crlf = crlf;
            self.at_line_start = true;
        } else {
            self.append(bytes);
            self.at_line_start = false;
        }
        if self.size > self.max.saturating_mul(DISCARD_FACTOR) {
            Progress::Abort
        } else {
            Progress::More
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size <= self.max {
            self.body.extend_from_slice(bytes);
        } else if !self.body.is_empty() {
            // Past the limit: what was kept is let go at once, not at the end.
            self.body = Vec::new();
        }
    }

    /// The mail, after [`Progress::End`].
    pub(super) fn finish(self) -> Result<Vec<u8>, TooLarge> {
        if self.size > self.max {
            Err(TooLarge)
        } else {
            Ok(self.body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds whole lines (split after each LF) and returns the mail once it ended.
    fn read(max: usize, wire: &[u8]) -> Option<Result<Vec<u8>, TooLarge>> {
        let mut reader = DataReader::new(max);
        for line in wire.split_inclusive(|&b| b == b'\n') {
            match reader.push(line, line.ends_with(b"\n")) {
                Progress::More => {}
                Progress::End => return Some(reader.finish()),
                Progress::Abort => return Some(Err(TooLarge)),
            }
        }
        None
    }

    #[test]
    fn a_mail_ends_at_the_lone_dot_and_keeps_its_crlf() {
        let mail = read(1000, b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n");
        assert_eq!(mail, Some(Ok(b"Subject: hi\r\n\r\nbody\r\n".to_vec())));
    }

    #[test]
    fn an_empty_mail_is_empty() {
        assert_eq!(read(1000, b".\r\n"), Some(Ok(Vec::new())));
    }

    #[test]
    fn dot_stuffed_lines_lose_their_first_dot() {
        let mail = read(1000, b"..\r\n...more\r\n.x\r\nnot.a.dot\r\n.\r\n");
        assert_eq!(
            mail,
            Some(Ok(b".\r\n..more\r\nx\r\nnot.a.dot\r\n".to_vec()))
        );
    }

    #[test]
    fn bare_lf_lines_are_stored_with_crlf() {
        let mail = read(1000, b"a\nb\r\nc\n\r\n.\r\n");
        assert_eq!(mail, Some(Ok(b"a\r\nb\r\nc\r\n\r\n".to_vec())));
    }

    #[test]
    fn a_dot_next_to_a_bare_lf_does_not_end_the_mail() {
        // "\n.\n", "\r\n.\n" and "\n.\r\n" are all kept as text: only CRLF . CRLF ends.
        assert_eq!(read(1000, b"a\n.\nb\r\n.\nc\n.\r\nd\r\n"), None);
        let mail = read(1000, b"a\n.\nb\r\n.\nc\n.\r\nd\r\n.\r\n");
        assert_eq!(mail, Some(Ok(b"a\r\n\r\nb\r\n\r\nc\r\n\r\nd\r\n".to_vec())));
    }

    #[test]
    fn a_bare_cr_is_text() {
        let mail = read(1000, b"a\rb\r\n\r.\r\n.\r\n");
        assert_eq!(mail, Some(Ok(b"a\rb\r\n\r.\r\n".to_vec())));
    }

    #[test]
    fn a_long_line_arrives_in_pieces_and_a_crlf_split_between_them_is_one_line_end() {
        let mut reader = DataReader::new(1000);
        assert_eq!(reader.push(b".start", false), Progress::More);
        assert_eq!(reader.push(b"..middle\r", false), Progress::More);
        assert_eq!(reader.push(b"\n", true), Progress::More);
        // The dot after the split CRLF still starts a line; so does the end marker.
        assert_eq!(reader.push(b"..x\r\n", true), Progress::More);
        assert_eq!(reader.push(b".\r\n", true), Progress::End);
        assert_eq!(reader.finish(), Ok(b"start..middle\r\n.x\r\n".to_vec()));
    }

    #[test]
    fn a_mail_at_the_limit_is_kept_and_one_octet_more_is_not() {
        // 8 octets: "1234\r\n" and "\r\n".
        assert_eq!(
            read(8, b"1234\r\n\r\n.\r\n"),
            Some(Ok(b"1234\r\n\r\n".to_vec()))
        );
        assert_eq!(read(7, b"1234\r\n\r\n.\r\n"), Some(Err(TooLarge)));
    }

    #[test]
    fn an_oversized_mail_is_read_to_its_end_without_being_kept() {
        let mut reader = DataReader::new(10);
        for _ in 0..3 {
            assert_eq!(reader.push(b"0123456789\r\n", true), Progress::More);
        }
        assert!(reader.body.is_empty(), "nothing is kept past the limit");
        assert_eq!(reader.push(b".\r\n", true), Progress::End);
        assert_eq!(reader.finish(), Err(TooLarge));
    }

    #[test]
    fn a_mail_far_past_the_limit_is_abandoned() {
        let mut reader = DataReader::new(10);
        let mut progress = Progress::More;
        for _ in 0..10 {
            progress = reader.push(b"0123456789\r\n", true);
            if progress != Progress::More {
                break;
            }
        }
        assert_eq!(progress, Progress::Abort);
    }

    /// Splits the wire as the connection reads it: at each LF, and every `limit` bytes of a
    /// longer line.
    fn pieces(wire: &[u8], limit: usize) -> Vec<(&[u8], bool)> {
        let mut pieces = Vec::new();
        let mut rest = wire;
        while !rest.is_empty() {
            let window = &rest[..rest.len().min(limit)];
            let (len, complete) = match window.iter().position(|&b| b == b'\n') {
                Some(end) => (end + 1, true),
                None => (window.len(), false),
            };
            pieces.push((&rest[..len], complete));
            rest = &rest[len..];
        }
        pieces
    }

    proptest::proptest! {
        /// Whatever the mail's lines (dots, CRs, empty lines) and however long lines are cut
        /// into pieces, dot-stuffing it as a client does and reading it back gives it back.
        #[test]
        fn any_mail_survives_stuffing_and_any_piece_size(
            lines in proptest::collection::vec("[.\ra ]{0,12}", 0..12),
            limit in 3usize..16,
        ) {
            let mail: Vec<u8> = lines.iter().flat_map(|l| [l.as_bytes(), b"\r\n"].concat()).collect();
            let mut wire = Vec::new();
            for line in &lines {
                if line.starts_with('.') {
                    wire.push(b'.');
                }
                wire.extend_from_slice(line.as_bytes());
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b".\r\nQUIT\r\n");
            let mut reader = DataReader::new(mail.len());
            let mut ended = false;
            for (piece, complete) in pieces(&wire, limit) {
                match reader.push(piece, complete) {
                    Progress::More => {}
                    Progress::End => {
                        ended = true;
                        break;
                    }
                    Progress::Abort => proptest::prop_assert!(false, "aborted"),
                }
            }
            proptest::prop_assert!(ended);
            proptest::prop_assert_eq!(reader.finish(), Ok(mail));
        }
    }
}
