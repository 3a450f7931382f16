"""The embedded word lists of the synthetic stories corpus (lcfast.data.synth): the raw inventory
its generator inflects and draws from with Zipfian weights. Changing any list changes the corpus
(bump `lcfast.data.synth.GENERATOR_VERSION`)."""

ANIMALS = """cat dog bird fish rabbit bunny frog duck mouse bear lion tiger fox owl horse cow pig
sheep goat hen chick puppy kitten turtle snail bee butterfly ant squirrel deer wolf monkey elephant
giraffe zebra penguin seal whale dolphin shark crab octopus parrot swan goose donkey pony lamb
hedgehog beaver otter raccoon panda koala kangaroo camel hippo snake lizard spider ladybug worm
dragon unicorn dinosaur robin sparrow crow bat mole badger moose caterpillar firefly jellyfish
starfish seahorse chipmunk hamster gorilla rhino leopard cheetah peacock flamingo toad beetle
puffin walrus llama yak ferret weasel magpie heron""".split()

OBJECTS = """ball toy doll kite car truck train boat book box hat bag cup spoon bowl plate ring
necklace bracelet shoe sock coat scarf blanket pillow bed chair table lamp clock key door window
drum flute guitar piano bell whistle crayon pencil paper picture puzzle block robot teddy balloon
bucket shovel sandcastle wagon bike swing slide rope stick stone shell feather leaf flower seed
basket jar bottle map compass flag crown wand broom umbrella mirror candle present letter card
sticker button marble bead ribbon brush paint jacket mitten boot helmet tent sled ladder
bench fence gate wheel bubble treasure coin jewel cookie jug kettle pot pan oven towel soap comb
rocket telescope magnet camera tablet sword shield pebble trumpet violin""".split()

FOODS = """apple banana cake cookie bread milk juice soup pie candy carrot grape orange pear
peach cherry berry strawberry sandwich pizza cheese egg honey jam muffin pancake waffle cereal
icecream lemon melon plum potato tomato corn pea bean rice noodle salad cupcake donut popcorn
pumpkin nut chocolate yogurt tea""".split()

PLACES = """park forest garden beach river lake pond farm school house castle village town city
shop store market library zoo playground field hill mountain cave island sea ocean meadow
jungle desert barn kitchen bedroom yard street bridge tower palace museum bakery hospital
station harbor valley swamp orchard camp tree""".split()

NATURE = """tree bush rock flower grass cloud sun moon star sky rain snow wind puddle hole log
stream pond hill nest web mud sand wave leaf branch root mushroom rainbow thunder storm fog ice
dust shadow""".split()

FAMILY = """mom dad mommy daddy grandma grandpa sister brother aunt uncle cousin friend teacher
neighbor baby""".split()

BODY = """hand foot knee arm leg head nose ear tail wing paw finger toe tooth eye""".split()

ADJ_PLAIN = """big small little tiny huge tall short long red blue green yellow pink purple
orange brown black white gray golden silver shiny soft hard warm cold hot wet dry clean dirty
happy sad kind mean brave scared shy funny silly smart quiet loud fast slow old young new pretty
ugly nice bright dark sunny rainy windy snowy fluffy furry fuzzy smooth rough round sweet sour
yummy tasty strong weak busy lazy sleepy hungry thirsty curious proud gentle friendly grumpy
lonely lucky noisy calm wild tidy messy fancy plain special magic secret sparkly colorful
wonderful beautiful strange heavy light empty full sticky spotty stripy wise clever careful
cheerful playful helpful thankful hopeful peaceful cozy shiny tiny great deep high low rich
poor sick fine ready sharp dull bumpy muddy dusty crunchy juicy chubby bouncy wobbly giant
little""".split()

FEELINGS = """happy sad angry scared excited proud sorry lonely surprised worried tired
hungry brave shy glad upset nervous calm jealous grateful silly confused curious bored sleepy
thankful hopeful safe loved cheerful grumpy""".split()

COLORS = """red blue green yellow pink purple orange brown black white gray golden silver""".split()

TIMES = """morning afternoon evening night day summer winter spring autumn weekend""".split()

WEEKDAYS = """Monday Tuesday Wednesday Thursday Friday Saturday Sunday""".split()

NUMBERS = """two three four five six seven eight nine ten eleven twelve twenty many some few""".split()

# (base, past) for irregular verbs; regular verbs get -ed.
IRREGULAR = {
    "go": "went", "see": "saw", "run": "ran", "eat": "ate", "find": "found", "make": "made",
    "give": "gave", "take": "took", "come": "came", "say": "said", "get": "got", "sit": "sat",
    "swim": "swam", "sing": "sang", "draw": "drew", "fly": "flew", "throw": "threw",
    "catch": "caught", "build": "built", "hold": "held", "hide": "hid", "ride": "rode",
    "write": "wrote", "read": "read", "feel": "felt", "fall": "fell", "bring": "brought",
    "buy": "bought", "think": "thought", "know": "knew", "grow": "grew", "dig": "dug",
    "drink": "drank", "keep": "kept", "sleep": "slept", "win": "won", "lose": "lost",
    "meet": "met", "leave": "left", "tell": "told", "hear": "heard", "shake": "shook",
    "blow": "blew", "break": "broke", "wake": "woke", "spin": "spun", "swing": "swung",
    "bake": "baked", "climb": "climbed", "jump": "jumped", "hug": "hugged", "stop": "stopped",
    "skip": "skipped", "hop": "hopped", "clap": "clapped", "drop": "dropped", "cry": "cried",
    "try": "tried", "dry": "dried", "carry": "carried", "hurry": "hurried", "worry": "worried",
    "bite": "bit", "slide": "slid", "shine": "shone", "stand": "stood", "speak": "spoke",
    "teach": "taught", "sell": "sold", "wear": "wore", "begin": "began", "steal": "stole",
    "sweep": "swept", "dream": "dreamed", "light": "lit", "chase": "chased", "wave": "waved",
    "dance": "danced", "share": "shared", "smile": "smiled", "paint": "painted",
}

VERBS_OBJ = """find make take see hold carry throw catch build hide bring buy keep share paint
draw clean fix open close push pull kick roll wash fold pick lift drop hug kiss chase follow
touch fill empty count sort stack wrap mend polish shake drag grab toss bounce spin swing
borrow return trade give lose color cut glue sew tie ride fly feed pet brush""".split()

VERBS_INTR = """play run jump swim sing dance laugh smile cry sleep hop skip climb walk rest
wait look listen shout whisper giggle wiggle wander explore travel race splash dig float
twirl tumble stretch yawn sneeze clap cheer nod blink hum whistle sparkle shine glow grow
bake cook hurry worry dream think""".split()

ACTIVITIES = """play tag|play hide and seek|build a fort|fly a kite|paint pictures|read books|
sing songs|bake cookies|ride a bike|look for shells|pick flowers|chase butterflies|
splash in puddles|climb trees|dance in the rain|make sandcastles|watch the stars|
feed the ducks|plant seeds|play ball|jump rope|draw with chalk|blow bubbles|
go on adventures|tell stories|count the clouds|race to the hill|swim in the lake|
ride the swings|visit the farm""".replace("\n", "").split("|")

NAME_ONSETS = """Ma Li To Be Sa Ni Ro Ka Ju El An Fi Da Mi Lu Pe Ra Ti Zo Ha Jo Ben Ca Lo Su Wi
Ty Ro Ella Em Ol Ar Ge Ho Ja Ke Ne Ru Va Ze Bo Cle Dre Fre Gra Bri Sta Ta Mo No Le Ri""".split()
NAME_CODAS_F = """ly la na ra sie by lla nie ra ssa ta lia rah ne ya ndy bel lie ra da""".split()
NAME_CODAS_M = """x m n ck ter ron ny dy ke to vin bert ly ric mo rk son do lan ben""".split()

PLACE_NAME_A = """Willow Oak Maple Pine Cedar Apple Cherry Honey Sunny Misty Silver Golden Green
Blue Red Rose Meadow Berry River Stone Fox Bear Owl Robin Lark Cloud Star Moon Frost Amber Clover
Fern Moss Pebble Thistle Birch Ash Elm Heather""".split()
PLACE_NAME_B = """brook field wood dale ton by ford hill vale shire port bury side wick stead
haven glen mere""".split()

MORALS = """always share with your friends|it is good to be kind to others|you should always
tell the truth|being brave is not the same as not being scared|friends help each other|
it is okay to ask for help|patience is important|we should take care of our things|
listening to your mom and dad keeps you safe|trying again is how we learn|
everyone is special in their own way|saying sorry can make things better|
a little kindness goes a long way|working together makes hard things easy|
it is important to clean up after yourself|you should never give up|
being different is a good thing|sharing makes everyone happy|
it is good to say thank you|small things can make a big difference""".replace("\n", "").split("|")

GREETINGS = """Hello|Hi|Good morning|Hey|Look|Wow|Oh no|Yay|Come on|Hooray""".split("|")

SOUNDS = """whoosh|splash|boom|crack|bang|pop|thud|crash|ding|buzz|swoosh|plop""".split("|")
