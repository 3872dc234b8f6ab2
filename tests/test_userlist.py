import pytest

from cablab_cluster.userlist import UserlistError, parse_userlist


def test_names_and_admins_with_blank_lines_and_comments():
    ul = parse_userlist("# staff\nAlice admin\n\n  bob   # a student\n\ncarol-x\n")
    assert ul.allowed == ("alice", "bob", "carol-x")
    assert ul.admins == ("alice",)


def test_blank_file_is_empty_not_a_crash():
    # The seed's parser raised IndexError on a blank line (hub restart loop).
    assert parse_userlist("\n\n").users == ()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("alice root\n", "userlist line 1: 'alice root' is not `name` or `name admin`"),
        ("alice\nbob admin extra\n", "userlist line 2: 'bob admin extra' is not `name` or `name admin`"),
        ("-bad\n", "userlist line 1: '-bad' is not a GitHub login"),
        ("a--b\n", "userlist line 1: 'a--b' is not a GitHub login"),
        ("alice\nALICE admin\n", "userlist line 2: 'alice' is listed twice"),
    ],
)
def test_errors_name_the_line(text, expected):
    with pytest.raises(UserlistError) as exc:
        parse_userlist(text)
    assert exc.value.errors[0].startswith(expected)


def test_all_errors_are_reported():
    with pytest.raises(UserlistError) as exc:
        parse_userlist("x y z\n\nok\n-no\n")
    assert [e.split(":")[0] for e in exc.value.errors] == ["userlist line 1", "userlist line 4"]


def test_render_round_trips():
    ul = parse_userlist("bob\nalice admin\n")
    assert parse_userlist(ul.render()) == ul
